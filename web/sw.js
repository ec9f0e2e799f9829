// The chat-server web client's service worker. It keeps the page's own files, the "shell",
// so the client opens while the server cannot be reached; the page itself keeps the
// conversations it showed (app.js, "kept for offline use"). It never answers for anything
// else: the API, the sockets, /healthz and /metrics always go to the server.
//
// The server fills in the client's version, a digest of every file of the client, so a new
// client is a new worker: the browser installs it beside this one, it takes over at once and
// deletes the old files, and the page reloads into the new client.
'use strict';

const VERSION = '__CLIENT_VERSION__';
const CACHE = `chat-shell-${VERSION}`;
const SHELL = [
  '/',
  '/assets/app.js',
  '/assets/app.css',
  '/assets/icon.svg',
  '/assets/icon-192.png',
  '/assets/icon-512.png',
  '/assets/icon-maskable-512.png',
  '/assets/manifest.webmanifest',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE)
    // Past the browser's HTTP cache: the files of this version, from the server.
    .then((cache) => cache.addAll(SHELL.map((url) => new Request(url, { cache: 'reload' }))))
    .then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys
      .filter((key) => key.startsWith('chat-shell-') && key !== CACHE)
      .map((key) => caches.delete(key))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || !SHELL.includes(url.pathname)) return;
  // The shell of this version, from the cache; the network only if it is not there.
  event.respondWith(caches.open(CACHE)
    .then((cache) => cache.match(url.pathname))
    .then((hit) => hit || fetch(request)));
});
