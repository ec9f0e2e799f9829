// The chat-server web client: plain JavaScript against the REST API and the room WebSocket.
//
// Safety rules this file keeps: user text only ever reaches the page as text nodes
// (textContent / createTextNode, never parsed as markup); the token lives in Web Storage and goes in
// request headers, or in the WebSocket query string, which the server never logs.
'use strict';

(() => {
  const API = '/api/v1';
  const SESSION_KEY = 'chat.session';
  /** What is kept for offline use, per user, beside the session: `chat.cache.<user id>.*`. */
  const CACHE_PREFIX = 'chat.cache.';
  /** The rooms kept for offline use: the most recent ones. */
  const CACHED_ROOMS = 200;
  /** The hidden-tab alert setting ('on' or absent), a preference of this browser. */
  const ALERTS_KEY = 'chat.alerts';
  const FLASH_EVERY_MS = 1000;
  /** How often an open page asks whether the server has a newer client. */
  const UPDATE_EVERY_MS = 60 * 60 * 1000;
  const PAGE_SIZE = 50;
  /** How often the room list is fetched while the all-rooms socket is down ... */
  const ROOMS_EVERY_MS = 4000;
  /** ... and while it is up (a safety net: the socket keeps the list current). */
  const ROOMS_SAFETY_MS = 60000;
  const TYPING_SEND_EVERY_MS = 2500;
  const TYPING_IDLE_MS = 4000;
  const TYPING_SHOWN_MS = 6000;
  const RESEND_AFTER_MS = 4000;
  /** The reactions offered on every message ... */
  const QUICK_REACTIONS = ['\u{1F44D}', '\u{2764}\u{FE0F}', '\u{1F602}', '\u{1F389}'];
  /** ... and the picker's, behind its "+" (any one emoji also works over the API). */
  const PICKER_REACTIONS = [
    '\u{1F44D}', '\u{1F44E}', '\u{2764}\u{FE0F}', '\u{1F602}', '\u{1F923}', '\u{1F60A}',
    '\u{1F60D}', '\u{1F914}', '\u{1F62E}', '\u{1F622}', '\u{1F621}', '\u{1F64F}',
    '\u{1F44F}', '\u{1F64C}', '\u{1F4AA}', '\u{1F389}', '\u{1F525}', '\u{2728}',
    '\u{1F680}', '\u{1F440}', '\u{2705}', '\u{274C}', '\u{1F4AF}', '\u{2615}',
  ];
  const GROUP_GAP_MS = 5 * 60 * 1000;
  const PING_EVERY_MS = 25000;
  const SILENT_LIMIT_MS = 60000;
  // How long a socket has to answer the ping sent when the network comes back.
  const PROBE_MS = 5000;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers

  /** Creates an element. Children that are strings become text nodes, never markup. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else if (key === 'text') el.textContent = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const ICONS = {
    plus: 'M12 5v14M5 12h14',
    logout: 'M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3M10 17l5-5-5-5M15 12H4',
    send: 'M4 12l16-8-6 16-2.5-6.5L4 12z',
    back: 'M15 5l-7 7 7 7',
    close: 'M6 6l12 12M18 6L6 18',
    check: 'M5 12.5l4.5 4.5L19 7.5',
    checks: 'M2.5 12.5L7 17l9.5-9.5M12 16l1 1 9.5-9.5',
    clock: 'M12 7v5l3 2M21 12a9 9 0 1 1-18 0 9 9 0 0 1 18 0z',
    down: 'M12 5v14M6 13l6 6 6-6',
    leave: 'M9 4H6a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h3M14 17l-5-5 5-5M9 12h11',
    clip: 'M21 11.5l-8.5 8.5a5 5 0 0 1-7-7l9-9a3.3 3.3 0 0 1 4.7 4.7l-9 9a1.7 1.7 0 0 1-2.4-2.4L15 7',
    file: 'M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8l-5-5zM14 3v5h5',
  };

  function icon(name) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('class', `icon icon-${name}`);
    const path = document.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', ICONS[name]);
    svg.append(path);
    return svg;
  }

  function show(el, visible) {
    el.hidden = !visible;
  }

  // ---------------------------------------------------------------- formatting

  function displayName(user) {
    if (!user) return 'Someone';
    const full = [user.first_name, user.last_name].filter(Boolean).join(' ').trim();
    return full || user.username;
  }

  function initials(text) {
    const words = String(text).trim().split(/[\s._@+-]+/).filter(Boolean);
    const letters = words.slice(0, 2).map((w) => Array.from(w)[0]);
    return (letters.join('') || '?').toUpperCase();
  }

  function colorIndex(key) {
    let hash = 0;
    for (const ch of String(key)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return hash % 8;
  }

  function fillAvatar(el, label, key, online) {
    el.textContent = initials(label);
    el.className = `avatar c${colorIndex(key)}${online ? ' online' : ''}`;
  }

  function avatar(label, key, extra) {
    const el = h('span', { 'aria-hidden': 'true' });
    fillAvatar(el, label, key, false);
    if (extra) el.classList.add(extra);
    return el;
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
  const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
  const dateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
  const longDateFmt = new Intl.DateTimeFormat(undefined, {
    weekday: 'long', day: 'numeric', month: 'long', year: 'numeric',
  });

  function startOfDay(d) {
    return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  }

  function shortWhen(iso) {
    const d = new Date(iso);
    const days = Math.round((startOfDay(new Date()) - startOfDay(d)) / 86400000);
    if (days <= 0) return timeFmt.format(d);
    if (days === 1) return 'Yesterday';
    if (days < 7) return weekdayFmt.format(d);
    return dateFmt.format(d);
  }

  function dayLabel(iso) {
    const d = new Date(iso);
    const days = Math.round((startOfDay(new Date()) - startOfDay(d)) / 86400000);
    if (days <= 0) return 'Today';
    if (days === 1) return 'Yesterday';
    return longDateFmt.format(d);
  }

  function randomId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // ---------------------------------------------------------------- session storage

  const session = {
    load() {
      for (const area of [sessionStorage, localStorage]) {
        try {
          const raw = area.getItem(SESSION_KEY);
          if (raw) return JSON.parse(raw);
        } catch (_) { /* unreadable: treat as signed out */ }
      }
      return null;
    },
    save(value, remember) {
      this.clear();
      (remember ? localStorage : sessionStorage).setItem(SESSION_KEY, JSON.stringify(value));
    },
    clear() {
      sessionStorage.removeItem(SESSION_KEY);
      localStorage.removeItem(SESSION_KEY);
    },
    /** The storage area that holds the session ("keep me signed in": localStorage). */
    area() {
      for (const area of [sessionStorage, localStorage]) {
        try {
          if (area.getItem(SESSION_KEY)) return area;
        } catch (_) { /* unusable */ }
      }
      return null;
    },
  };

  // ---------------------------------------------------------------- kept for offline use

  /** The room list, the newest page of each room opened, and the messages not yet sent, kept
   *  in the same storage area as the session (so they go when it does) for the signed-in
   *  user: a reload while the server is unreachable shows them, and sends the queued ones. */
  const kept = {
    key(part) {
      return `${CACHE_PREFIX}${state.me.id}.${part}`;
    },
    read(part) {
      const area = session.area();
      if (!area || !state.me) return null;
      try {
        const raw = area.getItem(this.key(part));
        return raw ? JSON.parse(raw) : null;
      } catch (_) {
        return null;
      }
    },
    write(part, value) {
      const area = session.area();
      if (!area || !state.me) return;
      try {
        area.setItem(this.key(part), JSON.stringify(value));
      } catch (_) { /* full or unavailable: the page works without it */ }
    },
    /** The rooms (ids) with messages waiting to be sent. */
    roomsWithPending() {
      const area = session.area();
      if (!area || !state.me) return [];
      const prefix = this.key('room.');
      const ids = [];
      for (let i = 0; i < area.length; i += 1) {
        const key = area.key(i);
        if (key && key.startsWith(prefix)) ids.push(key.slice(prefix.length));
      }
      return ids.filter((id) => {
        const room = this.read(`room.${id}`);
        return room && room.pending && room.pending.length > 0;
      });
    },
    /** Forgets everything kept, for every user (signing out). */
    clear() {
      for (const area of [sessionStorage, localStorage]) {
        try {
          const keys = [];
          for (let i = 0; i < area.length; i += 1) {
            const key = area.key(i);
            if (key && key.startsWith(CACHE_PREFIX)) keys.push(key);
          }
          for (const key of keys) area.removeItem(key);
        } catch (_) { /* unusable */ }
      }
    },
  };

  // ---------------------------------------------------------------- app state

  const state = {
    token: null,
    me: null,
    rooms: [],
    filter: '',
    view: null, // the open RoomView
    roomsTimer: null,
    roomsInFlight: null,
    roomsFetchedAt: 0,
    restDown: false,
    roomsFromCache: false,
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || (status ? `HTTP ${status}` : 'The server cannot be reached.'));
      this.status = status;
      this.code = err.code || (status ? 'http_error' : 'network_error');
      this.fields = err.fields || null;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = `Token ${state.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (_) {
      setRestDown(true);
      throw new ApiError(0, null);
    }
    setRestDown(false);
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const error = new ApiError(res.status, data);
      if (res.status === 401 && state.token) sessionExpired();
      throw error;
    }
    return data;
  }

  // ---------------------------------------------------------------- connection banner

  function setRestDown(down) {
    if (state.restDown === down) return;
    state.restDown = down;
    renderConnection();
  }

  let bannerTimer = null;

  function renderConnection() {
    const view = state.view;
    const wsDown = Boolean(view && view.down);
    const down = state.restDown || wsDown || !navigator.onLine;
    const banner = $('offline');
    show(banner, down && Boolean(state.me));
    document.body.classList.toggle('is-offline', down);
    clearInterval(bannerTimer);
    bannerTimer = null;
    if (!down) return;
    const text = $('offline-text');
    const update = () => {
      const base = navigator.onLine ? 'Connection lost.' : "You're offline.";
      let when = ' Reconnecting…';
      if (view && view.retryAt) {
        const secs = Math.ceil((view.retryAt - Date.now()) / 1000);
        if (secs > 0) when = ` Reconnecting in ${secs} s…`;
      }
      const queued = view ? view.pending.length : 0;
      const note = queued ? ` ${queued} unsent ${queued === 1 ? 'message' : 'messages'} will be sent when you're back.` : '';
      text.textContent = base + when + note;
    };
    update();
    bannerTimer = setInterval(update, 1000);
  }

  /** Back online, or "Retry now": the banner is worked out again from what holds now, the
   *  socket (if it looks open) is asked to prove it, and a closed one reconnects at once. */
  function retryNow() {
    renderConnection();
    if (state.view) state.view.retryNow();
    refreshRooms();
  }

  // ---------------------------------------------------------------- toasts

  let toastTimer = null;

  // ---------------------------------------------------------------- favicon

  const favicon = { image: null, shown: 0 };

  /** The tab's icon carries the unread count, as the title does: the app icon with a red
   *  badge, drawn on a canvas (a `data:` URL, which the page's CSP allows for images). */
  function renderFavicon(unread) {
    if (unread === favicon.shown) return;
    favicon.shown = unread;
    const link = $('favicon');
    if (!unread) {
      link.type = 'image/svg+xml';
      link.href = '/assets/icon.svg';
      return;
    }
    const draw = () => {
      if (favicon.shown !== unread) return;
      const canvas = document.createElement('canvas');
      canvas.width = 64;
      canvas.height = 64;
      const g = canvas.getContext('2d');
      g.drawImage(favicon.image, 0, 0, 64, 64);
      g.fillStyle = '#d92d20';
      g.beginPath();
      g.arc(44, 20, 20, 0, 2 * Math.PI);
      g.fill();
      g.fillStyle = '#ffffff';
      g.font = 'bold 26px system-ui, sans-serif';
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText(unread > 9 ? '9+' : String(unread), 44, 21);
      link.type = 'image/png';
      link.href = canvas.toDataURL('image/png');
    };
    if (favicon.image && favicon.image.complete) return draw();
    favicon.image = new Image();
    favicon.image.addEventListener('load', draw);
    favicon.image.src = '/assets/icon.svg';
  }

  // ---------------------------------------------------------------- keyboard shortcuts

  /** Alt+Down / Alt+Up: the next or previous chat in the list; Alt+Shift+Down / Up: the next
   *  or previous one with unread messages; Ctrl+K (or / outside a text field): search;
   *  Escape: closes what is open (picker, search, dialog), on a phone the chat too. */
  function onShortcut(e) {
    if (!state.me) return;
    const typing = e.target.closest && e.target.closest('input, textarea, [contenteditable]');
    if (e.altKey && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) {
      e.preventDefault();
      stepRoom(e.key === 'ArrowDown' ? 1 : -1, e.shiftKey);
    } else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'k') {
      e.preventDefault();
      focusSearch();
    } else if (e.key === '/' && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
      e.preventDefault();
      focusSearch();
    } else if (e.key === 'Escape' && !typing) {
      if (!$('search-results').hidden) closeSearch();
      else if (state.view && !window.matchMedia('(min-width: 721px)').matches) location.hash = '';
    }
  }

  function focusSearch() {
    if (document.body.classList.contains('room-open') && !window.matchMedia('(min-width: 721px)').matches) {
      location.hash = '';
    }
    $('room-filter').focus();
    $('room-filter').select();
  }

  /** Opens the chat `by` places after the open one in the list (only unread ones if asked). */
  function stepRoom(by, unreadOnly) {
    const rooms = state.rooms;
    if (!rooms.length) return;
    const open = state.view ? rooms.findIndex((r) => r.room_id === state.view.room.room_id) : -1;
    const n = rooms.length;
    const start = open >= 0 ? open : (by > 0 ? -1 : n);
    for (let step = 1; step <= n; step += 1) {
      const room = rooms[(((start + by * step) % n) + n) % n];
      if (!unreadOnly || room.unread_count > 0) {
        location.hash = `#/c/${room.room_id}`;
        return;
      }
    }
  }

  /** Tells a screen reader of a new message, once: the announcer keeps the last few. */
  function announce(text) {
    const log = $('announcer');
    log.append(h('p', { text }));
    while (log.childElementCount > 5) log.firstElementChild.remove();
  }

  function toast(message) {
    const el = $('toast');
    el.textContent = message;
    show(el, true);
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => show(el, false), 4500);
  }

  // ---------------------------------------------------------------- auth screens

  function showAuth(which, message) {
    show($('boot'), false);
    show($('main'), false);
    show($('auth'), true);
    $('auth-host').textContent = `on ${location.host}`;
    show($('login-form'), which !== 'signup');
    show($('signup-form'), which === 'signup');
    setFormError('login-error', which !== 'signup' ? message : null);
    const first = which === 'signup' ? $('signup-first-name') : $('login-username');
    first.focus();
  }

  function setFormError(id, message) {
    const el = $(id);
    el.textContent = message || '';
    show(el, Boolean(message));
  }

  function setFieldErrors(form, fields) {
    for (const el of form.querySelectorAll('.field-error')) {
      const why = fields && fields[el.dataset.for];
      el.textContent = why ? capitalize(why) : '';
      show(el, Boolean(why));
      const input = el.closest('.field').querySelector('input');
      if (why) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
  }

  function capitalize(s) {
    return s ? s[0].toUpperCase() + s.slice(1) : s;
  }

  async function withBusy(button, fn) {
    button.disabled = true;
    button.classList.add('busy');
    try {
      return await fn();
    } finally {
      button.disabled = false;
      button.classList.remove('busy');
    }
  }

  async function logIn(username, password, remember) {
    const data = await api('POST', '/login/', { username, password });
    state.token = data.token;
    session.save({ token: data.token, user: data.user, expires_at: data.expires_at }, remember);
    enterApp(data.user);
  }

  async function onLogin(event) {
    event.preventDefault();
    const username = $('login-username').value.trim();
    const password = $('login-password').value;
    if (!username || !password) {
      setFormError('login-error', 'Enter your username and password.');
      return;
    }
    setFormError('login-error', null);
    await withBusy($('login-submit'), async () => {
      try {
        await logIn(username, password, $('login-remember').checked);
        $('login-password').value = '';
      } catch (e) {
        setFormError('login-error', e.status === 401 ? 'Wrong username or password.' : e.message);
      }
    });
  }

  async function onSignup(event) {
    event.preventDefault();
    const form = $('signup-form');
    const username = $('signup-username').value.trim();
    const password = $('signup-password').value;
    const firstName = $('signup-first-name').value.trim();
    const local = {};
    if (!username) local.username = 'choose a username';
    if (password.length < 8) local.password = 'must be at least 8 characters';
    setFieldErrors(form, local);
    if (Object.keys(local).length) {
      setFormError('signup-error', null);
      return;
    }
    await withBusy($('signup-submit'), async () => {
      try {
        await api('POST', '/signup/', { username, password, first_name: firstName });
        setFieldErrors(form, null);
        setFormError('signup-error', null);
        await logIn(username, password, false);
        $('signup-password').value = '';
      } catch (e) {
        if (e.fields) {
          setFieldErrors(form, e.fields);
          setFormError('signup-error', 'Please fix the highlighted fields.');
        } else if (e.status === 409) {
          setFieldErrors(form, { username: 'this username is taken' });
          setFormError('signup-error', null);
        } else {
          setFormError('signup-error', e.message);
        }
      }
    });
  }

  function sessionExpired() {
    signOutLocally();
    showAuth('login', 'Your session has ended. Please log in again.');
  }

  async function onLogout() {
    try {
      await api('POST', '/logout/');
    } catch (_) { /* signed out locally either way */ }
    signOutLocally();
    showAuth('login', null);
  }

  function signOutLocally() {
    session.clear();
    kept.clear();
    stopFlash();
    forgetBlobs();
    picked.length = 0;
    renderPicked();
    state.token = null;
    state.me = null;
    state.rooms = [];
    closeRoom();
    clearInterval(state.roomsTimer);
    state.roomsTimer = null;
    closeRoomsSocket();
    $('rooms').replaceChildren();
    setTitle('Chat');
    if (history.replaceState) history.replaceState(null, '', location.pathname);
  }

  // ---------------------------------------------------------------- main screen

  function enterApp(user) {
    state.me = user;
    show($('boot'), false);
    show($('auth'), false);
    show($('main'), true);
    fillAvatar($('me-avatar'), displayName(user), user.id, false);
    $('me-name').textContent = displayName(user);
    $('me-handle').textContent = `@${user.username}`;
    clearInterval(state.roomsTimer);
    state.roomsTimer = setInterval(() => {
      // The all-rooms socket keeps the list current; without it, the list is fetched.
      const live = roomsSocket.helloed;
      const due = Date.now() - state.roomsFetchedAt > (live ? ROOMS_SAFETY_MS : ROOMS_EVERY_MS);
      const notifying = 'Notification' in window && Notification.permission === 'granted';
      if (due && (document.visibilityState === 'visible' || state.restDown || notifying)) refreshRooms();
    }, ROOMS_EVERY_MS);
    if (!state.rooms.length) {
      const rooms = kept.read('rooms');
      if (Array.isArray(rooms) && rooms.length) {
        state.rooms = rooms;
        state.roomsFromCache = true;
        renderRooms();
      }
    }
    connectRoomsSocket();
    renderNotifyPrompt();
    renderConnection();
    // Focus was in the auth form, now hidden: it lands at the top of the chats, not on the page.
    if (!document.activeElement || document.activeElement === document.body
        || $('auth').contains(document.activeElement)) {
      $('chats-heading').focus();
    }
    refreshRooms().then(route, route);
  }

  /** Opens the room named in the URL fragment (`#/c/<room_id>`), or the list. */
  function route() {
    if (!state.me) return;
    const match = /^#\/c\/([A-Za-z0-9]+)$/.exec(location.hash);
    const roomId = match ? match[1] : null;
    if (!roomId) {
      closeRoom();
      return;
    }
    if (state.view && state.view.room.room_id === roomId) return;
    const room = state.rooms.find((r) => r.room_id === roomId);
    if (room) {
      openRoom(room);
    } else if (state.rooms.length || !state.restDown) {
      toast('That conversation is not available.');
      location.hash = '';
    }
  }

  function refreshRooms() {
    if (!state.me) return Promise.resolve();
    if (state.roomsInFlight) return state.roomsInFlight;
    // The most recent rooms, as many as one page holds (the server clamps the limit to its
    // limits.rooms_page_max); older ones come back to the top when they get a message.
    state.roomsFetchedAt = Date.now();
    state.roomsInFlight = api('GET', '/chats/?limit=500')
      .then((rooms) => {
        // Rooms shown from what was kept are not news: their messages came before the reload.
        if (!state.roomsFromCache) notifyFromRooms(state.rooms, rooms);
        state.roomsFromCache = false;
        state.rooms = rooms;
        if (state.view) {
          const fresh = rooms.find((r) => r.room_id === state.view.room.room_id);
          if (fresh) state.view.updateRoom(fresh);
        }
        renderRooms();
        if (!state.view && location.hash.startsWith('#/c/')) route();
        sendKeptPending();
      })
      .catch(() => {})
      .finally(() => { state.roomsInFlight = null; });
    return state.roomsInFlight;
  }

  // ---------------------------------------------------------------- the all-rooms socket

  /** `/ws/`: every room's events, which keep the room list current without polling. */
  const roomsSocket = { ws: null, helloed: false, attempt: 0, timer: null, refreshTimer: null };

  function connectRoomsSocket() {
    if (!state.me || roomsSocket.ws) return;
    clearTimeout(roomsSocket.timer);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws/?token=${encodeURIComponent(state.token)}`);
    roomsSocket.ws = ws;
    ws.addEventListener('message', (event) => {
      if (roomsSocket.ws !== ws) return;
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      onRoomsFrame(frame);
    });
    ws.addEventListener('close', () => {
      if (roomsSocket.ws !== ws) return;
      roomsSocket.ws = null;
      roomsSocket.helloed = false;
      if (!state.me) return;
      const delay = Math.min(30000, 1000 * 2 ** roomsSocket.attempt) * (1 + Math.random() * 0.3);
      roomsSocket.attempt += 1;
      roomsSocket.timer = setTimeout(connectRoomsSocket, delay);
    });
  }

  function closeRoomsSocket() {
    clearTimeout(roomsSocket.timer);
    clearTimeout(roomsSocket.refreshTimer);
    const ws = roomsSocket.ws;
    roomsSocket.ws = null;
    roomsSocket.helloed = false;
    if (ws) ws.close(1000, 'signed out');
  }

  /** Fetches the list soon, once for a burst of events that need it. */
  function refreshRoomsSoon() {
    clearTimeout(roomsSocket.refreshTimer);
    roomsSocket.refreshTimer = setTimeout(refreshRooms, 300);
  }

  function onRoomsFrame(frame) {
    const room = frame.room_id ? state.rooms.find((r) => r.room_id === frame.room_id) : null;
    const open = state.view && frame.room_id === state.view.room.room_id;
    switch (frame.type) {
      case 'hello':
        // Anything missed while the socket was down is in the list as fetched now.
        // A new server may bring a new client, too.
        if (roomsSocket.attempt > 0 || roomsSocket.helloed) {
          refreshRooms();
          checkForUpdate();
        }
        roomsSocket.helloed = true;
        roomsSocket.attempt = 0;
        return;
      case 'message': {
        const m = frame.message;
        const to = state.rooms.find((r) => r.room_id === m.room_id);
        if (!to) { refreshRoomsSoon(); return; }
        if (to.last_message && to.last_message.id >= m.id) return;
        to.last_message = m;
        const mine = m.sender_id === state.me.id;
        const isOpen = state.view && state.view.room.room_id === to.room_id;
        if (!mine && !isOpen) {
          to.unread_count += 1;
          if (mentionsMe(m)) to.mention_count += 1;
          notifyMessage(to, m);
        }
        state.rooms = [to, ...state.rooms.filter((r) => r !== to)];
        renderRooms();
        return;
      }
      case 'message_updated':
        if (room && room.last_message && room.last_message.id === frame.message.id) {
          room.last_message = frame.message;
          renderRooms();
        }
        // A deletion may change what is unread.
        if (frame.message.deleted && !open) refreshRoomsSoon();
        return;
      case 'read':
        if (frame.user_id === state.me.id && !open) refreshRoomsSoon();
        return;
      case 'room':
        refreshRoomsSoon();
        return;
      case 'member':
        if (frame.user.id === state.me.id && !frame.added) {
          state.rooms = state.rooms.filter((r) => r.room_id !== frame.room_id);
          renderRooms();
        } else {
          refreshRoomsSoon();
        }
        return;
      case 'room_updated':
        if (room) {
          room.name = frame.name;
          room.admins = frame.admins;
          renderRooms();
          if (open) state.view.updateRoom(room);
        }
        return;
      default:
        return undefined;
    }
  }

  // ---------------------------------------------------------------- notifications

  // ---------------------------------------------------------------- message search

  /** `text` with the `[start, end)` character ranges in `hits` marked, as nodes. */
  function highlighted(text, hits) {
    const chars = [...text];
    const out = [];
    let at = 0;
    for (const [start, end] of hits) {
      if (start < at || end > chars.length) continue;
      if (start > at) out.push(chars.slice(at, start).join(''));
      out.push(h('mark', { text: chars.slice(start, end).join('') }));
      at = end;
    }
    if (at < chars.length) out.push(chars.slice(at).join(''));
    return out;
  }

  async function searchMessages(q) {
    const seq = (state.searchSeq = (state.searchSeq || 0) + 1);
    show($('search-results'), true);
    $('search-summary').textContent = 'Searching…';
    $('search-list').replaceChildren();
    let page;
    try {
      page = await api('GET', `/search/?${new URLSearchParams({ q, limit: '50' })}`);
    } catch (e) {
      if (seq === state.searchSeq) $('search-summary').textContent = e.message || 'Search failed.';
      return;
    }
    if (seq !== state.searchSeq) return;
    const n = page.results.length;
    $('search-summary').textContent = n ? `${n}${page.next ? '+' : ''} found` : 'Nothing found.';
    $('search-list').replaceChildren(...page.results.map(({ message, hits }) => {
      const room = state.rooms.find((r) => r.room_id === message.room_id);
      const where = room ? roomTitle(room) : '';
      return h('li', null, h('button', {
        type: 'button',
        class: 'search-hit',
        dataset: { roomId: message.room_id, id: String(message.id) },
        onclick: () => openMessage(message.room_id, message.id),
      },
      h('span', { class: 'search-where muted small', text: `${message.sender} · ${where} · ${shortWhen(message.created)}` }),
      h('span', { class: 'search-text' }, highlighted(message.content, hits))));
    }));
  }

  /** Opens room `roomId` and shows message `id` in context. */
  function openMessage(roomId, id) {
    if (state.view && state.view.room.room_id === roomId) {
      state.view.reveal(id);
      return;
    }
    state.revealNext = { roomId, id };
    location.hash = `#/c/${roomId}`;
  }

  function closePicker() {
    show($('reaction-picker'), false);
  }

  function closeSearch() {
    state.searchSeq = (state.searchSeq || 0) + 1;
    show($('search-results'), false);
  }

  /** Whether `message` mentions the signed-in user. */
  function mentionsMe(message) {
    return Boolean(state.me && message.mentions && message.mentions.includes(state.me.id));
  }

  /** Shows a browser notification for a message that mentions you or is sent to you
   * directly, while the tab is hidden and if you allowed notifications. */
  function notifyMessage(room, message) {
    alertHidden(room, message);
    if (!document.hidden || !('Notification' in window) || Notification.permission !== 'granted') return;
    if (!state.me || message.sender_id === state.me.id || message.deleted) return;
    if (!room.is_direct && !mentionsMe(message)) return;
    const title = room.is_direct ? senderName(room, message) : `${senderName(room, message)} in ${roomTitle(room)}`;
    try {
      const n = new Notification(title, { body: message.content.slice(0, 200), tag: `m${message.id}` });
      n.onclick = () => { window.focus(); location.hash = `#/c/${room.room_id}`; };
    } catch (_) {
      /* some browsers only notify from a service worker */
    }
  }

  /** After a refresh of the room list: notifies of new messages in rooms not open. */
  function notifyFromRooms(before, after) {
    const openId = state.view ? state.view.room.room_id : null;
    for (const room of after) {
      if (room.room_id === openId || !room.last_message) continue;
      const old = before.find((r) => r.room_id === room.room_id);
      const seen = old && old.last_message ? old.last_message.id : 0;
      if (!old || room.last_message.id > seen) notifyMessage(room, room.last_message);
    }
  }

  function renderNotifyPrompt() {
    const wanted = 'Notification' in window && Notification.permission === 'default';
    show($('notify'), Boolean(state.me && wanted));
  }

  // ---------------------------------------------------------------- hidden-tab alerts

  /** With the sidebar's setting on, a new message from someone else while this tab is hidden
   *  plays a chime (made with WebAudio) and flashes the title, "New message from Bob", until
   *  the tab is seen again. Off unless turned on; remembered by this browser. */
  const alerts = { on: false, audio: null, flashTimer: null, flashText: '', lastId: 0 };
  let baseTitle = 'Chat';

  /** The title the page has when nothing flashes: the unread count. */
  function setTitle(title) {
    baseTitle = title;
    if (!alerts.flashTimer) document.title = title;
  }

  function loadAlertSetting() {
    try {
      alerts.on = localStorage.getItem(ALERTS_KEY) === 'on';
    } catch (_) {
      alerts.on = false;
    }
    $('alerts').checked = alerts.on;
  }

  function onAlertSetting(event) {
    alerts.on = event.target.checked;
    try {
      if (alerts.on) localStorage.setItem(ALERTS_KEY, 'on');
      else localStorage.removeItem(ALERTS_KEY);
    } catch (_) { /* kept for this page only */ }
    // A click is what lets a page play sound: the audio context is made (or woken) now.
    if (alerts.on) unlockAudio();
  }

  /** Makes (or resumes) the audio context during a user's gesture, as autoplay rules want. */
  function unlockAudio() {
    if (!alerts.on) return;
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    try {
      if (!alerts.audio) alerts.audio = new Context();
      if (alerts.audio.state === 'suspended') alerts.audio.resume().catch(() => {});
    } catch (_) {
      alerts.audio = null;
    }
  }

  function alertHidden(room, message) {
    if (!alerts.on || !document.hidden || !state.me) return;
    if (message.sender_id === state.me.id || message.deleted || message.id <= alerts.lastId) return;
    alerts.lastId = message.id;
    chime();
    flashTitle(`New message from ${senderName(room, message)}`);
  }

  /** Two short soft notes, rising. */
  function chime() {
    const ctx = alerts.audio;
    if (!ctx) return;
    try {
      if (ctx.state === 'suspended') ctx.resume().catch(() => {});
      const t = ctx.currentTime;
      const gain = ctx.createGain();
      gain.connect(ctx.destination);
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.15, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.5);
      for (const [frequency, at] of [[880, 0], [1318.5, 0.12]]) {
        const osc = ctx.createOscillator();
        osc.type = 'sine';
        osc.frequency.value = frequency;
        osc.connect(gain);
        osc.start(t + at);
        osc.stop(t + 0.5);
      }
    } catch (_) { /* no sound, the title still flashes */ }
  }

  function flashTitle(text) {
    alerts.flashText = text;
    document.title = text;
    if (alerts.flashTimer) return;
    let lit = true;
    alerts.flashTimer = setInterval(() => {
      lit = !lit;
      document.title = lit ? alerts.flashText : baseTitle;
    }, FLASH_EVERY_MS);
  }

  function stopFlash() {
    if (!alerts.flashTimer) return;
    clearInterval(alerts.flashTimer);
    alerts.flashTimer = null;
    document.title = baseTitle;
  }

  // ---------------------------------------------------------------- offline shell and updates

  /** The service worker (`/assets/sw.js`, for the whole origin) keeps this page's files, so
   *  the client opens while the server cannot be reached. A server with another client serves
   *  another worker; once it has taken over, the page reloads into the new client, at once if
   *  nothing typed would be lost, else when the user says so. Service workers need a secure
   *  context (HTTPS, or http://localhost); elsewhere the page simply works online only. */
  const worker = { registration: null, hadController: false, reloading: false };

  function registerWorker() {
    if (!('serviceWorker' in navigator)) return;
    worker.hadController = Boolean(navigator.serviceWorker.controller);
    navigator.serviceWorker.addEventListener('controllerchange', onNewWorker);
    navigator.serviceWorker.register('/assets/sw.js', { scope: '/' }).then((registration) => {
      worker.registration = registration;
    }, () => { /* works online only */ });
    setInterval(checkForUpdate, UPDATE_EVERY_MS);
  }

  /** Asks the server for its worker now (the browser also does on each page load). */
  function checkForUpdate() {
    if (worker.registration) worker.registration.update().catch(() => {});
  }

  function onNewWorker() {
    // The first worker of this page only starts keeping its files: nothing changed.
    if (!worker.hadController) {
      worker.hadController = true;
      return;
    }
    if (worker.reloading) return;
    if (nothingToLose()) reloadForUpdate();
    else show($('update'), true);
  }

  function reloadForUpdate() {
    worker.reloading = true;
    location.reload();
  }

  /** Whether a reload now would lose nothing: no text typed in a field on screen, no dialog
   *  open. Queued messages are kept across reloads. */
  function nothingToLose() {
    const fields = document.querySelectorAll('input:not([type="checkbox"]), textarea');
    const typed = [...fields].some((el) => el.value && el.getClientRects().length > 0);
    return !typed && !$('new-chat-dialog').open;
  }

  /** Sends the messages queued in rooms that are not open (a room left while they waited, or
   *  the page reloaded on another one) over REST, with their `client_id`, so each is stored
   *  once however often it is tried. */
  let sendingKept = false;

  async function sendKeptPending() {
    if (sendingKept || !state.me) return;
    sendingKept = true;
    try {
      for (const roomId of kept.roomsWithPending()) {
        if (state.view && state.view.room.room_id === roomId) continue;
        const room = kept.read(`room.${roomId}`);
        for (const p of room.pending.slice()) {
          const body = { content: p.content, client_id: p.client_id };
          if (p.reply_to_id) body.reply_to = p.reply_to_id;
          const ids = (p.attachments || []).map((a) => a.id).filter(Boolean);
          if (ids.length) body.attachments = ids;
          if (!p.content && !ids.length) continue;
          try {
            await api('POST', `/chat/${encodeURIComponent(roomId)}/`, body);
          } catch (e) {
            if (!e.status || e.status === 429 || e.status >= 500) return; // later
            toast(`A message could not be sent: ${e.message}`);
          }
          if (!state.me || (state.view && state.view.room.room_id === roomId)) break;
          const now = kept.read(`room.${roomId}`) || room;
          now.pending = (now.pending || []).filter((q) => q.client_id !== p.client_id);
          kept.write(`room.${roomId}`, now);
        }
      }
    } finally {
      sendingKept = false;
    }
  }

  function roomTitle(room) {
    if (room.name) return room.name;
    const others = room.members.filter((m) => !state.me || m.id !== state.me.id);
    if (!others.length) return 'Just you';
    return others.map(displayName).join(', ');
  }

  function otherMember(room) {
    if (!room.is_direct) return null;
    return room.members.find((m) => m.id !== state.me.id) || null;
  }

  function roomKey(room) {
    const other = otherMember(room);
    return other ? other.id : room.room_id;
  }

  function previewText(room) {
    const last = room.last_message;
    if (!last) return room.is_direct ? 'Say hello' : `${room.members.length} members`;
    const who = last.sender_id === state.me.id ? 'You: ' : (room.is_direct ? '' : `${senderName(room, last)}: `);
    const files = (last.attachments || []).map((a) => a.filename).join(', ');
    const text = last.content.replace(/\s+/g, ' ');
    return who + (text || (files ? `${last.attachments.length === 1 ? 'File' : 'Files'}: ${files}` : ''));
  }

  function senderName(room, message) {
    const member = room.members.find((m) => m.id === message.sender_id);
    return member ? displayName(member) : message.sender;
  }

  function senderIsBot(room, message) {
    const member = room.members.find((m) => m.id === message.sender_id);
    return Boolean(member && member.is_bot);
  }

  function renderRooms() {
    const list = $('rooms');
    const openId = state.view ? state.view.room.room_id : null;
    const filter = state.filter.toLowerCase();
    const rooms = state.rooms.filter((r) => !filter || roomTitle(r).toLowerCase().includes(filter));
    const hadFocus = document.activeElement && list.contains(document.activeElement)
      ? document.activeElement.dataset.roomId : null;
    let unreadTotal = 0;
    const items = rooms.map((room) => {
      const open = room.room_id === openId;
      const unread = open ? 0 : room.unread_count;
      unreadTotal += unread;
      const title = roomTitle(room);
      const button = h('button', {
        type: 'button',
        class: `room-item${unread ? ' unread' : ''}`,
        dataset: { roomId: room.room_id },
        'aria-current': open ? 'true' : null,
        onclick: () => { location.hash = `#/c/${room.room_id}`; },
      },
      avatar(title, roomKey(room)),
      h('span', { class: 'room-text' },
        h('span', { class: 'room-line' },
          h('span', { class: 'room-name', text: title }),
          room.last_message
            ? h('time', { class: 'room-time', datetime: room.last_message.created, text: shortWhen(room.last_message.created) })
            : null),
        h('span', { class: 'room-line' },
          h('span', { class: 'room-preview', text: previewText(room) }),
          !open && room.mention_count
            ? h('span', { class: 'badge mention' },
              h('span', { 'aria-hidden': 'true', text: '@' }),
              h('span', { class: 'sr-only', text: `${room.mention_count} mentioning you` }))
            : null,
          unread
            ? h('span', { class: 'badge' },
              h('span', { 'aria-hidden': 'true', text: unread > 99 ? '99+' : String(unread) }),
              h('span', { class: 'sr-only', text: `${unread} unread` }))
            : null)));
      return h('li', null, button);
    });
    list.replaceChildren(...items);
    show($('rooms-empty'), state.rooms.length === 0);
    setTitle(unreadTotal ? `(${unreadTotal}) Chat` : 'Chat');
    renderFavicon(unreadTotal);
    kept.write('rooms', state.rooms.slice(0, CACHED_ROOMS));
    if (hadFocus) {
      const again = list.querySelector(`[data-room-id="${hadFocus}"]`);
      if (again) again.focus();
    }
  }

  /** Leaves the open conversation: a group, or a direct room (which declines it). */
  async function onLeave() {
    if (!state.view || !state.me) return;
    const room = state.view.room;
    const question = room.is_direct
      ? `Leave your conversation with ${roomTitle(room)}? They will not be able to reach you here again unless you start it yourself.`
      : `Leave ${roomTitle(room)}? You will need someone to add you to come back.`;
    if (!window.confirm(question)) return;
    try {
      await api('DELETE', `/chat/${encodeURIComponent(room.room_id)}/members/${state.me.id}/`);
    } catch (e) {
      if (e.status !== 404) {
        toast(e.message || 'Could not leave the conversation.');
        return;
      }
    }
    state.rooms = state.rooms.filter((r) => r.room_id !== room.room_id);
    location.hash = '';
    toast('You left the conversation.');
    refreshRooms();
  }

  // ---------------------------------------------------------------- the room view

  function openRoom(room) {
    closeRoom();
    state.view = new RoomView(room);
    document.body.classList.add('room-open');
    show($('room-placeholder'), false);
    show($('room-view'), true);
    renderRooms();
    state.view.start();
    if (state.revealNext && state.revealNext.roomId === room.room_id) {
      state.view.revealAfterLoad = state.revealNext.id;
    }
    state.revealNext = null;
    // On a desktop the composer takes focus; on a phone that would pop the keyboard up over
    // the conversation, so focus goes to the room's name, and the keyboard waits for a tap.
    if (window.matchMedia('(min-width: 721px)').matches) $('input').focus();
    else $('room-name').focus();
  }

  function closeRoom() {
    const left = state.view ? state.view.room.room_id : null;
    const focusWasInRoom = $('room-view').contains(document.activeElement)
      || document.activeElement === document.body;
    if (state.view) {
      state.view.stop();
      state.view = null;
    }
    $('announcer').replaceChildren();
    document.body.classList.remove('room-open');
    show($('room-view'), false);
    show($('room-placeholder'), true);
    $('message-list').replaceChildren();
    $('typing').replaceChildren();
    renderConnection();
    if (state.me) renderRooms();
    // Back to the list (a phone's Back): focus returns to the room just left.
    if (left && focusWasInRoom) {
      const item = document.querySelector(`#rooms .room-item[data-room-id="${left}"]`);
      (item || $('chats-heading')).focus();
    }
  }

  class RoomView {
    constructor(room) {
      this.room = room;
      this.messages = new Map(); // id -> message
      this.lastSeq = 0; // highest position in the sequence of changes seen on the socket
      this.editing = null; // id of the message being edited in the composer
      this.replying = null; // the message the next one answers
      this.pending = []; // messages sent but not acknowledged, in order
      this.nodes = new Map(); // render key -> { el, sig }
      this.loaded = false;
      this.fromCache = false; // showing what was kept, not yet the server's copy
      this.hasMore = false;
      this.loadingOlder = false;
      this.online = new Set();
      this.typers = new Map(); // user id -> { user, until }
      this.readMarks = new Map(); // user id -> highest message id read
      this.lastReadSent = 0;
      this.ws = null;
      this.helloed = false;
      this.everConnected = false;
      this.down = false;
      this.attempt = 0;
      this.retryTimer = null;
      this.retryAt = 0;
      this.stopped = false;
      this.typingSentAt = 0;
      this.typingIdleTimer = null;
      this.typingTick = null;
      this.resendTimer = null;
      this.pingTimer = null;
      this.probeTimer = null;
      this.lastHeard = 0;
      this.observer = null;
    }

    // -- lifecycle

    start() {
      this.restore();
      this.renderHeader();
      this.renderHistoryTop();
      this.renderTyping();
      $('input').value = '';
      autosize();
      if (this.messages.size || this.pending.length) this.render('bottom');
      this.observer = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting)) this.loadOlder();
      }, { root: $('messages'), rootMargin: '200px 0px 0px 0px' });
      this.observer.observe($('history-top'));
      this.typingTick = setInterval(() => this.expireTypers(), 1000);
      this.resendTimer = setInterval(() => this.resendPending(false), RESEND_AFTER_MS);
      this.pingTimer = setInterval(() => this.keepAlive(), PING_EVERY_MS);
      this.connect();
    }

    stop() {
      this.stopped = true;
      this.sendTyping(false);
      clearTimeout(this.retryTimer);
      clearTimeout(this.typingIdleTimer);
      clearInterval(this.typingTick);
      clearInterval(this.resendTimer);
      clearInterval(this.pingTimer);
      clearTimeout(this.probeTimer);
      if (this.observer) this.observer.disconnect();
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close(1000, 'closed');
      }
      show($('jump'), false);
    }

    updateRoom(fresh) {
      this.room = fresh;
      this.renderHeader();
    }

    // -- kept for offline use

    /** Shows what was kept of this room, until the server sends it as it is now. */
    restore() {
      const saved = kept.read(`room.${this.room.room_id}`);
      if (!saved) return;
      for (const m of saved.messages || []) this.store(m);
      this.fromCache = this.messages.size > 0;
      this.pending = (saved.pending || [])
        .map((p) => ({ ...p, attachments: p.attachments || [], sentAt: 0, pending: true }))
        .filter((p) => p.content || p.attachments.length);
    }

    /** Keeps the newest page of messages and every unsent one. */
    persist() {
      const newest = [...this.messages.values()].sort((a, b) => b.id - a.id).slice(0, PAGE_SIZE).reverse();
      kept.write(`room.${this.room.room_id}`, {
        messages: newest,
        pending: this.pending.map(({ sentAt, ...p }) => ({
          ...p,
          attachments: (p.attachments || []).filter((a) => a.id)
            .map(({ file, previewURL, progressEl, uploading, ...a }) => a),
        })),
      });
    }

    // -- connection

    async connect() {
      if (this.stopped) return;
      clearTimeout(this.retryTimer);
      this.retryAt = 0;
      if (!this.loaded) {
        try {
          await this.loadLatest();
        } catch (e) {
          if (e.status === 404) return this.gone();
          return this.scheduleRetry();
        }
        if (this.stopped) return;
      }
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      const since = Math.max(this.lastId(), this.lastSeq);
      const query = `token=${encodeURIComponent(state.token)}&since=${since}`;
      const ws = new WebSocket(`${scheme}://${location.host}/ws/chat/${encodeURIComponent(this.room.room_id)}/?${query}`);
      this.ws = ws;
      let opened = false;
      ws.addEventListener('open', () => { opened = true; });
      ws.addEventListener('message', (event) => {
        if (this.ws !== ws) return;
        this.lastHeard = Date.now();
        let frame;
        try { frame = JSON.parse(event.data); } catch (_) { return; }
        this.onFrame(frame);
      });
      ws.addEventListener('close', () => this.lost(ws, opened));
    }

    /** The socket `ws` ended (or went silent): show it and plan the next attempt. */
    lost(ws, opened) {
      if (this.ws !== ws) return;
      this.ws = null;
      this.helloed = false;
      this.online.clear();
      this.typers.clear();
      this.renderHeader();
      this.renderTyping();
      if (this.stopped) return;
      if (!opened) {
        // Refused before the upgrade: maybe the token expired or the room is gone.
        // `api` signs out on a 401; a 404 means we lost access.
        api('GET', `/chat/${this.room.room_id}/?limit=1`).catch((e) => {
          if (e.status === 404) this.gone();
        });
      }
      this.scheduleRetry();
    }

    /** Pings the server; a socket silent for too long is presumed dead and replaced. */
    keepAlive() {
      const ws = this.ws;
      if (!ws || !this.helloed) return;
      if (Date.now() - this.lastHeard > SILENT_LIMIT_MS) {
        this.lost(ws, true);
        ws.close();
        return;
      }
      this.send({ action: 'ping' });
    }

    scheduleRetry() {
      if (this.stopped) return;
      this.down = true;
      const base = Math.min(10000, 500 * 2 ** this.attempt);
      const delay = Math.round(base * (1 + Math.random() * 0.3));
      this.attempt += 1;
      this.retryAt = Date.now() + delay;
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.connect(), delay);
      this.renderHeader();
      renderConnection();
    }

    retryNow() {
      if (this.stopped) return;
      if (this.ws) {
        this.probe();
        return;
      }
      this.attempt = 0;
      this.connect();
    }

    /** A socket that looks open may have died while the network was away: a ping it does not
     *  answer within PROBE_MS replaces it. */
    probe() {
      const ws = this.ws;
      if (!ws || !this.helloed) return;
      const asked = Date.now();
      this.send({ action: 'ping' });
      clearTimeout(this.probeTimer);
      this.probeTimer = setTimeout(() => {
        if (this.ws === ws && this.lastHeard < asked) {
          this.lost(ws, true);
          ws.close();
        }
      }, PROBE_MS);
    }

    gone() {
      toast('You no longer have access to this conversation.');
      location.hash = '';
    }

    send(frame) {
      if (this.ws && this.helloed && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify(frame));
        return true;
      }
      return false;
    }

    // -- history

    lastId() {
      let last = 0;
      for (const id of this.messages.keys()) if (id > last) last = id;
      return last;
    }

    oldestId() {
      let oldest = Infinity;
      for (const id of this.messages.keys()) if (id < oldest) oldest = id;
      return oldest === Infinity ? null : oldest;
    }

    async loadLatest() {
      const page = await api('GET', `/chat/${this.room.room_id}/?limit=${PAGE_SIZE}`);
      if (this.stopped) return;
      this.loaded = true;
      this.hasMore = page.has_more;
      if (this.fromCache) {
        // What was kept gives way to the server's copy (edits, deletions since).
        this.fromCache = false;
        this.messages.clear();
      }
      for (const m of page.results) this.store(m);
      // A queued message the server already has (its answer was lost) is not sent again.
      const stored = new Set(page.results.map((m) => m.client_id).filter(Boolean));
      this.pending = this.pending.filter((p) => !stored.has(p.client_id));
      this.render('bottom');
      this.renderHistoryTop();
      if (this.revealAfterLoad) {
        const id = this.revealAfterLoad;
        this.revealAfterLoad = null;
        this.reveal(id);
        return;
      }
      // A short first page leaves nothing to scroll: fetch more until the screen is full.
      if (this.hasMore && $('messages').scrollTop < 200) this.loadOlder();
    }

    async refreshReadFlags() {
      const page = await api('GET', `/chat/${this.room.room_id}/?limit=${PAGE_SIZE}`);
      if (this.stopped) return;
      for (const m of page.results) if (this.messages.has(m.id)) this.store(m);
      this.render('auto');
    }

    async loadOlder() {
      if (!this.loaded || !this.hasMore || this.loadingOlder || this.stopped) return;
      const before = this.oldestId();
      if (before === null) return;
      this.loadingOlder = true;
      this.renderHistoryTop();
      try {
        const page = await api('GET', `/chat/${this.room.room_id}/?limit=${PAGE_SIZE}&before=${before}`);
        if (this.stopped) return;
        this.hasMore = page.has_more;
        for (const m of page.results) this.store(m);
        this.render('keep');
      } catch (_) {
        /* offline: the button stays for another try */
      } finally {
        this.loadingOlder = false;
        if (!this.stopped) this.renderHistoryTop();
      }
      // Still at the top with more to load (a tall screen): keep going.
      if (!this.stopped && this.hasMore && $('messages').scrollTop < 200) this.loadOlder();
    }

    renderHistoryTop() {
      show($('load-older'), this.loaded && this.hasMore && !this.loadingOlder);
      show($('history-loading'), this.loadingOlder || (!this.loaded && !this.fromCache));
      show($('history-start'), this.loaded && !this.hasMore && this.messages.size > 0);
    }

    /** Records a message; returns true if it is new. */
    store(message) {
      const known = this.messages.get(message.id);
      // A read flag never goes back; anything else is as the newest copy says.
      const merged = known && known.is_read && !message.is_read ? { ...message, is_read: true } : message;
      this.messages.set(message.id, merged);
      if (message.is_read && message.sender_id === state.me.id) {
        this.readMarks.set('all', Math.max(this.readMarks.get('all') || 0, message.id));
      }
      return !known;
    }

    // -- frames from the server

    onFrame(frame) {
      switch (frame.type) {
        case 'hello': return this.onHello(frame);
        case 'message': return this.onMessage(frame);
        case 'message_updated': return this.onUpdated(frame);
        case 'read': return this.onRead(frame);
        case 'typing': return this.onTyping(frame);
        case 'presence': return this.onPresence(frame);
        case 'error': return this.onError(frame);
        default: return undefined;
      }
    }

    onHello(frame) {
      const reconnected = this.everConnected;
      this.helloed = true;
      this.everConnected = true;
      this.down = false;
      this.attempt = 0;
      this.retryAt = 0;
      this.online = new Set(frame.online);
      this.renderHeader();
      renderConnection();
      if (reconnected) {
        // The socket replays missed messages (`since`), but not read receipts sent while we
        // were away: refresh the flags of the newest messages we already have.
        this.refreshReadFlags().catch(() => {});
        refreshRooms();
        checkForUpdate();
      }
      this.resendPending(true);
      this.maybeMarkRead();
    }

    /** Notes how far the sequence of changes has been seen, for the next `since`. */
    sawSeq(frame) {
      if (typeof frame.seq === 'number' && frame.seq > this.lastSeq) this.lastSeq = frame.seq;
    }

    /** A message was edited or deleted: show it as it is now. */
    onUpdated(frame) {
      const message = frame.message;
      if (message.room_id !== this.room.room_id) return;
      this.sawSeq(frame);
      // A message older than anything loaded is not shown; history brings it as it is now.
      const oldest = this.oldestId();
      if (!this.messages.has(message.id) && (oldest === null || message.id < oldest)) return;
      this.store(message);
      if (this.editing === message.id && message.deleted) this.cancelEdit();
      this.render('auto');
      const room = state.rooms.find((r) => r.room_id === this.room.room_id);
      if (room && room.last_message && room.last_message.id === message.id) {
        room.last_message = message;
        renderRooms();
      }
    }

    onMessage(frame) {
      const message = frame.message;
      if (message.room_id !== this.room.room_id) return;
      this.sawSeq(frame);
      const mine = message.sender_id === state.me.id;
      if (mine && message.client_id) {
        this.pending = this.pending.filter((p) => p.client_id !== message.client_id);
      }
      const atBottom = this.atBottom();
      const isNew = this.store(message);
      if (isNew) notifyMessage(this.room, message);
      if (isNew && !mine) {
        const files = (message.attachments || []).map((a) => a.filename).join(', ');
        announce(`${senderName(this.room, message)}: ${[message.content, files && `sent ${files}`].filter(Boolean).join(' ')}`);
      }
      if (this.typers.delete(message.sender_id)) this.renderTyping();
      this.render(mine || atBottom ? 'bottom' : 'auto');
      if (isNew && !mine && !atBottom) show($('jump'), true);
      if (isNew) this.bumpRoom(message);
      this.maybeMarkRead();
    }

    onRead(frame) {
      if (frame.user_id === state.me.id) {
        this.lastReadSent = Math.max(this.lastReadSent, frame.message_id);
        return;
      }
      const prev = this.readMarks.get(frame.user_id) || 0;
      if (frame.message_id > prev) {
        this.readMarks.set(frame.user_id, frame.message_id);
        this.render('auto');
      }
    }

    onTyping(frame) {
      if (frame.user.id === state.me.id) return;
      if (frame.typing) {
        this.typers.set(frame.user.id, { user: frame.user, until: Date.now() + TYPING_SHOWN_MS });
      } else {
        this.typers.delete(frame.user.id);
      }
      this.renderTyping();
    }

    onPresence(frame) {
      if (frame.online) this.online.add(frame.user.id);
      else {
        this.online.delete(frame.user.id);
        this.typers.delete(frame.user.id);
        this.renderTyping();
      }
      this.renderHeader();
    }

    onError(frame) {
      if (frame.code === 'rate_limited') toast('You are sending messages too fast; they will go out in a moment.');
      else if (frame.code === 'overloaded') toast('The server is busy; your messages will go out in a moment.');
      else if (frame.code === 'storage_full') toast('The server cannot store messages right now; yours are kept here and sent when it can.');
      else if (frame.code !== 'not_found') toast(frame.message || 'Something went wrong.');
    }

    bumpRoom(message) {
      const room = state.rooms.find((r) => r.room_id === this.room.room_id);
      if (room && (!room.last_message || room.last_message.id < message.id)) {
        room.last_message = message;
        state.rooms = [room, ...state.rooms.filter((r) => r !== room)];
        renderRooms();
      }
    }

    // -- sending

    submit(text, files = []) {
      const content = text.trim();
      if (this.editing !== null) return content ? this.finishEdit(content) : false;
      if (!content && !files.length) return false;
      const replyTo = this.replying;
      this.cancelReply();
      const pending = {
        client_id: randomId(),
        reply_to_id: replyTo ? replyTo.id : null,
        content,
        attachments: files.map(localAttachment),
        sender_id: state.me.id,
        sender: state.me.username,
        created: new Date().toISOString(),
        sentAt: 0,
        pending: true,
      };
      this.pending.push(pending);
      this.sendTyping(false);
      this.trySend(pending);
      this.render('bottom');
      if (this.down) renderConnection();
      return true;
    }

    /** Scrolls to message `id`, loading older pages until it is there (at most 20), and
     * marks it for a moment. */
    async reveal(id) {
      for (let i = 0; i < 20 && !this.messages.has(id) && this.hasMore && !this.stopped; i += 1) {
        await this.loadOlder();
      }
      const el = $('message-list').querySelector(`.msg[data-id="${id}"]`);
      if (!el) {
        toast('That message is no longer here.');
        return;
      }
      el.scrollIntoView({ block: 'center' });
      el.classList.add('flash');
      setTimeout(() => el.classList.remove('flash'), 2000);
    }

    // -- replying and reacting

    startReply(id) {
      const m = this.messages.get(id);
      if (!m || m.deleted) return;
      this.cancelEdit();
      this.replying = m;
      $('replying-text').textContent = `Replying to ${senderName(this.room, m)}: ${m.content.slice(0, 100)}`;
      show($('replying'), true);
      $('input').focus();
    }

    cancelReply() {
      this.replying = null;
      show($('replying'), false);
    }

    /** Opens the reaction picker for message `id` beside `anchor`. */
    openPicker(id, anchor) {
      const picker = $('reaction-picker');
      picker.replaceChildren(...PICKER_REACTIONS.map((e) => h('button', {
        type: 'button', class: 'pick', 'aria-label': `React ${e}`, dataset: { emoji: e },
        onclick: () => { closePicker(); this.react(id, e, true); },
      }, e)));
      const box = anchor.getBoundingClientRect();
      picker.style.left = `${Math.max(8, Math.min(box.left, window.innerWidth - 300))}px`;
      picker.style.top = `${Math.max(8, box.top - 150)}px`;
      show(picker, true);
      picker.querySelector('button').focus();
    }

    async react(id, emoji, on) {
      try {
        const updated = await api(on ? 'PUT' : 'DELETE', `/messages/${id}/reactions/${encodeURIComponent(emoji)}/`);
        if (this.stopped) return;
        this.store(updated);
        this.render('auto');
      } catch (e) {
        toast(e.message || 'Could not react.');
      }
    }

    // -- editing and deleting

    /** Edits your newest message that can still be edited; false if there is none. */
    editLast() {
      const mine = [...this.messages.values()]
        .filter((m) => m.sender_id === state.me.id && !m.deleted)
        .sort((a, b) => b.id - a.id);
      if (!mine.length) return false;
      this.startEdit(mine[0].id);
      return true;
    }

    startEdit(id) {
      const m = this.messages.get(id);
      if (!m || m.deleted) return;
      this.cancelReply();
      this.editing = id;
      $('input').value = m.content;
      autosize();
      show($('editing'), true);
      $('input').focus();
      this.render('auto');
    }

    cancelEdit() {
      if (this.editing === null) return;
      this.editing = null;
      $('input').value = '';
      autosize();
      show($('editing'), false);
      this.render('auto');
    }

    finishEdit(content) {
      const id = this.editing;
      const m = this.messages.get(id);
      this.editing = null;
      show($('editing'), false);
      this.render('auto');
      if (!m || m.content === content) return true;
      api('PATCH', `/messages/${id}/`, { content })
        .then((updated) => {
          if (this.stopped) return;
          this.store(updated);
          this.render('auto');
        })
        .catch((e) => toast(e.message || 'Could not edit the message.'));
      return true;
    }

    async deleteMessage(id) {
      if (!window.confirm('Delete this message for everyone?')) return;
      try {
        const tombstone = await api('DELETE', `/messages/${id}/`);
        if (this.stopped) return;
        this.store(tombstone);
        if (this.editing === id) this.cancelEdit();
        this.render('auto');
      } catch (e) {
        toast(e.message || 'Could not delete the message.');
      }
    }

    trySend(p) {
      const files = p.attachments || [];
      if (files.some((a) => !a.id)) {
        this.uploadFor(p);
        return;
      }
      const frame = { action: 'message', content: p.content, client_id: p.client_id };
      if (p.reply_to_id) frame.reply_to = p.reply_to_id;
      if (files.length) frame.attachments = files.map((a) => a.id);
      if (this.send(frame)) {
        p.sentAt = Date.now();
      }
    }

    /** Uploads the files of pending message `p` that are not uploaded yet, then sends it. A
     * file the server refuses is left out (and the message with it, if nothing is left);
     * one that could not reach the server is tried again with the next resend. */
    uploadFor(p) {
      for (const a of p.attachments) {
        if (a.id || a.uploading) continue;
        if (!a.file) {
          // Picked before a reload: the file itself is gone.
          p.attachments = p.attachments.filter((x) => x !== a);
          continue;
        }
        a.uploading = true;
        uploadFile(a, (done) => {
          a.progress = done;
          if (a.progressEl) a.progressEl.value = Math.round(done * 100);
        }).then((upload) => {
          a.uploading = false;
          a.id = upload.id;
          a.width = upload.width;
          a.height = upload.height;
          a.progress = 1;
          if (this.stopped) return;
          this.render('auto');
          if (p.attachments.every((x) => x.id)) this.trySend(p);
        }, (e) => {
          a.uploading = false;
          if (!e.status || e.status === 429 || e.status === 408 || e.status >= 500) return;
          toast(`${a.filename} could not be sent: ${e.message}`);
          p.attachments = p.attachments.filter((x) => x !== a);
          if (!p.content && !p.attachments.length) {
            this.pending = this.pending.filter((x) => x !== p);
          } else if (p.attachments.every((x) => x.id)) {
            this.trySend(p);
          }
          if (!this.stopped) this.render('auto');
        });
      }
      if (!p.content && !p.attachments.length) {
        this.pending = this.pending.filter((x) => x !== p);
        this.render('auto');
      } else if (p.attachments.every((x) => x.id)) {
        this.trySend(p);
      }
    }

    /** Sends what is still unacknowledged; the server de-duplicates by `client_id`. */
    resendPending(all) {
      const now = Date.now();
      for (const p of this.pending) {
        if (all || !p.sentAt || now - p.sentAt > RESEND_AFTER_MS) this.trySend(p);
      }
    }

    // -- typing

    onInput() {
      const hasText = $('input').value.trim().length > 0;
      clearTimeout(this.typingIdleTimer);
      if (!hasText) {
        this.sendTyping(false);
        return;
      }
      if (Date.now() - this.typingSentAt > TYPING_SEND_EVERY_MS) {
        if (this.send({ action: 'typing', typing: true })) this.typingSentAt = Date.now();
      }
      this.typingIdleTimer = setTimeout(() => this.sendTyping(false), TYPING_IDLE_MS);
    }

    sendTyping(typing) {
      clearTimeout(this.typingIdleTimer);
      if (!typing && this.typingSentAt) {
        this.typingSentAt = 0;
        this.send({ action: 'typing', typing: false });
      }
    }

    expireTypers() {
      const now = Date.now();
      let changed = false;
      for (const [id, t] of this.typers) {
        if (t.until < now) {
          this.typers.delete(id);
          changed = true;
        }
      }
      if (changed) this.renderTyping();
    }

    renderTyping() {
      const el = $('typing');
      const names = [...this.typers.values()].map((t) => displayName(t.user));
      if (!names.length) {
        el.replaceChildren();
        el.classList.remove('active');
        return;
      }
      let text;
      if (names.length === 1) text = `${names[0]} is typing`;
      else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing`;
      else text = `${names.length} people are typing`;
      el.replaceChildren(h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), h('span', { text }));
      el.classList.add('active');
    }

    // -- read receipts

    atBottom() {
      const box = $('messages');
      return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
    }

    maybeMarkRead() {
      if (document.visibilityState !== 'visible' || !this.atBottom()) return;
      show($('jump'), false);
      let newest = 0;
      for (const m of this.messages.values()) {
        if (m.sender_id !== state.me.id && m.id > newest) newest = m.id;
      }
      if (newest > this.lastReadSent && this.send({ action: 'read', message_id: newest })) {
        this.lastReadSent = newest;
        const room = state.rooms.find((r) => r.room_id === this.room.room_id);
        if (room) room.unread_count = 0;
      }
    }

    /** The highest id of mine every other member has read. */
    readUpTo() {
      const others = this.room.members.filter((m) => m.id !== state.me.id);
      let each = Infinity;
      for (const m of others) each = Math.min(each, this.readMarks.get(m.id) || 0);
      if (each === Infinity) each = 0;
      return Math.max(each, this.readMarks.get('all') || 0);
    }

    // -- header

    renderHeader() {
      const room = this.room;
      const title = roomTitle(room);
      $('room-name').textContent = title;
      const other = otherMember(room);
      const status = $('room-status');
      let text;
      let onlineNow = false;
      if (this.down || !this.helloed) {
        text = this.down ? 'Offline — reconnecting…' : 'Connecting…';
      } else if (other) {
        onlineNow = this.online.has(other.id);
        text = onlineNow ? 'Online' : `@${other.username}`;
      } else {
        const others = room.members.filter((m) => m.id !== state.me.id && this.online.has(m.id));
        text = `${room.members.length} members`;
        if (others.length) text += `, ${others.length} online: ${others.map(displayName).join(', ')}`;
      }
      status.textContent = text;
      status.classList.toggle('is-online', onlineNow);
      fillAvatar($('room-avatar'), title, roomKey(room), onlineNow);
    }

    // -- the message list

    /** Renders the list. `mode`: 'bottom' scrolls to the end, 'keep' holds the view still
     * while older messages are added above, 'auto' stays at the bottom if already there. */
    render(mode) {
      const box = $('messages');
      const list = $('message-list');
      const stick = mode === 'bottom' || (mode === 'auto' && this.atBottom());
      const prevHeight = box.scrollHeight;
      const prevTop = box.scrollTop;

      const confirmed = [...this.messages.values()].sort((a, b) => a.id - b.id);
      const all = confirmed.concat(this.pending);
      const readUpTo = this.readUpTo();
      const group = !this.room.is_direct;
      const wanted = [];
      let prev = null;
      for (const m of all) {
        const day = startOfDay(new Date(m.created));
        if (!prev || startOfDay(new Date(prev.created)) !== day) {
          wanted.push(this.node(`d:${day}`, 'day', () => h('li', { class: 'day' }, h('span', { text: dayLabel(m.created) }))));
          prev = null;
        }
        const cont = Boolean(prev && prev.sender_id === m.sender_id
          && new Date(m.created) - new Date(prev.created) < GROUP_GAP_MS);
        const mine = m.sender_id === state.me.id;
        let status = '';
        if (mine) status = m.pending ? 'pending' : (m.id <= readUpTo || m.is_read ? 'read' : 'sent');
        const key = m.pending ? `p:${m.client_id}` : `m:${m.id}`;
        const files = (m.attachments || []).map((a) => a.id || '').join(',');
        const sig = `${cont}|${status}|${m.updated}|${m.deleted}|${this.editing === m.id}|${JSON.stringify(m.reactions || [])}|${files}`;
        wanted.push(this.node(key, sig, () => this.messageNode(m, { cont, mine, status, group })));
        prev = m;
      }
      // Put the wanted nodes in order, reusing the ones already in place.
      let cursor = list.firstChild;
      for (const el of wanted) {
        if (el === cursor) cursor = cursor.nextSibling;
        else list.insertBefore(el, cursor);
      }
      while (cursor) {
        const next = cursor.nextSibling;
        cursor.remove();
        cursor = next;
      }
      const keep = new Set(wanted);
      for (const [key, n] of this.nodes) if (!keep.has(n.el)) this.nodes.delete(key);

      if (stick) box.scrollTop = box.scrollHeight;
      else if (mode === 'keep') box.scrollTop = prevTop + (box.scrollHeight - prevHeight);
      this.persist();
    }

    node(key, sig, build) {
      const known = this.nodes.get(key);
      if (known && known.sig === sig) return known.el;
      const el = build();
      this.nodes.set(key, { el, sig });
      return el;
    }

    /** A message's files: images as thumbnails that open the viewer, anything else as a
     * chip that downloads it; a file still uploading with its progress. */
    attachmentsNode(m) {
      const box = h('div', { class: 'attachments' });
      for (const a of m.attachments) {
        let item;
        const image = a.local ? a.isImage && a.previewURL : a.thumbnail_url;
        if (image) {
          const img = h('img', { class: 'att-thumb', alt: a.filename });
          if (a.width && a.height) {
            const scale = Math.min(1, 320 / Math.max(a.width, a.height));
            img.width = Math.max(1, Math.round(a.width * scale));
            img.height = Math.max(1, Math.round(a.height * scale));
          }
          if (a.local) img.src = a.previewURL;
          else fetchBlob(a.thumbnail_url).then((u) => { img.src = u; }, () => img.classList.add('broken'));
          item = a.local
            ? h('span', { class: 'att-image' }, img)
            : h('button', {
              type: 'button', class: 'att-image', 'aria-label': `Open the image ${a.filename}`,
              onclick: () => openViewer(a),
            }, img);
        } else {
          const parts = [icon('file'), h('span', { class: 'att-name', text: a.filename }),
            h('span', { class: 'att-size', text: formatSize(a.size) })];
          item = a.local || !a.url
            ? h('span', { class: 'att-file' }, ...parts)
            : h('button', {
              type: 'button', class: 'att-file', 'aria-label': `Download ${a.filename}, ${formatSize(a.size)}`,
              onclick: () => downloadFile(a),
            }, ...parts);
        }
        box.append(item);
        if (a.local && !a.id) {
          a.progressEl = h('progress', {
            class: 'att-progress', max: '100', value: String(Math.round(a.progress * 100)),
            'aria-label': `Uploading ${a.filename}`,
          });
          box.append(a.progressEl);
        }
      }
      return box;
    }

    messageNode(m, { cont, mine, status, group }) {
      const time = new Date(m.created);
      const meta = h('span', { class: 'meta' },
        h('time', { datetime: m.created, title: longDateFmt.format(time), text: timeFmt.format(time) }));
      if (mine) {
        const label = { pending: 'Sending', sent: 'Sent', read: 'Read' }[status];
        const tick = h('span', { class: `tick ${status}`, title: label },
          icon({ pending: 'clock', sent: 'check', read: 'checks' }[status]),
          h('span', { class: 'sr-only', text: label }));
        meta.append(tick);
      }
      if (m.edited && !m.deleted) {
        meta.prepend(h('span', { class: 'edited', title: longDateFmt.format(new Date(m.edited)), text: 'edited' }));
      }
      const bubble = h('div', { class: 'bubble' });
      // A bot's messages always name it, marked as a bot; in a group everyone's do.
      const bot = senderIsBot(this.room, m);
      if ((group || bot) && !mine && !cont) {
        const label = h('span', { class: `sender t${colorIndex(m.sender_id)}`, text: senderName(this.room, m) });
        if (bot) label.append(h('span', { class: 'bot-badge', text: 'bot', title: 'An account for a program, not a person' }));
        bubble.append(label);
      }
      if (m.reply_to) {
        const original = m.reply_to.id;
        bubble.append(h('button', {
          type: 'button', class: 'quote', title: 'Show the message this answers', onclick: () => this.reveal(original),
        },
        h('span', { class: 'quote-sender', text: m.reply_to.sender }),
        h('span', { class: 'quote-text', text: m.reply_to.excerpt || 'Deleted message' })));
      }
      if (m.deleted) {
        bubble.append(h('span', { class: 'text deleted', text: 'This message was deleted.' }), meta);
      } else {
        if (m.attachments && m.attachments.length) bubble.append(this.attachmentsNode(m));
        if (m.content) bubble.append(h('span', { class: 'text', text: m.content }));
        bubble.append(meta);
      }
      if (!m.deleted && m.reactions && m.reactions.length) {
        bubble.append(h('span', { class: 'reactions' }, m.reactions.map((r) => h('button', {
          type: 'button',
          class: `reaction${r.me ? ' me' : ''}`,
          'aria-pressed': r.me ? 'true' : 'false',
          title: r.me ? 'Take back your reaction' : 'React',
          dataset: { emoji: r.emoji },
          onclick: () => this.react(m.id, r.emoji, !r.me),
        }, `${r.emoji} ${r.count}`))));
      }
      const actions = !m.pending && !m.deleted
        ? h('div', { class: 'msg-actions' },
          h('button', {
            type: 'button', class: 'link small reply', text: 'Reply', onclick: () => this.startReply(m.id),
          }),
          h('span', { class: 'quick-reactions' }, QUICK_REACTIONS.map((e) => h('button', {
            type: 'button', class: 'link small react', 'aria-label': `React ${e}`, dataset: { emoji: e },
            onclick: () => this.react(m.id, e, true),
          }, e)), h('button', {
            type: 'button', class: 'link small more-reactions', 'aria-label': 'More reactions',
            'aria-haspopup': 'true', title: 'More reactions',
            onclick: (e) => this.openPicker(m.id, e.currentTarget),
          }, '+')),
          mine ? h('button', {
            type: 'button', class: 'link small edit', text: 'Edit', onclick: () => this.startEdit(m.id),
          }) : null,
          mine ? h('button', {
            type: 'button', class: 'link small delete', text: 'Delete', onclick: () => this.deleteMessage(m.id),
          }) : null)
        : null;
      return h('li', {
        class: `msg ${mine ? 'mine' : 'theirs'}${cont ? ' cont' : ''}${m.deleted ? ' is-deleted' : ''}${this.editing === m.id ? ' is-editing' : ''}${mentionsMe(m) ? ' mentions-me' : ''}`,
        dataset: m.pending ? { clientId: m.client_id, status } : { id: String(m.id), status: status || 'theirs' },
      }, bubble, actions);
    }
  }

  // ---------------------------------------------------------------- files

  /** Files are fetched with the token in the header, never in a URL: each becomes a `blob:`
   * URL, made once per address (the browser's cache keeps the bytes: they never change). The
   * most recently used `KEPT_BLOBS` are kept; older ones are let go. */
  const blobs = new Map();
  const KEPT_BLOBS = 200;

  function fetchBlob(url) {
    const known = blobs.get(url);
    if (known) {
      // Most recently used last.
      blobs.delete(url);
      blobs.set(url, known);
      return known;
    }
    while (blobs.size >= KEPT_BLOBS) {
      const [oldest, made] = blobs.entries().next().value;
      blobs.delete(oldest);
      made.then((u) => URL.revokeObjectURL(u), () => {});
    }
    const made = fetch(url, {
      headers: { Authorization: `Token ${state.token}` },
      credentials: 'omit',
    }).then((res) => {
      if (!res.ok) throw new ApiError(res.status, null);
      return res.blob();
    }).then((blob) => URL.createObjectURL(blob));
    made.catch(() => { if (blobs.get(url) === made) blobs.delete(url); });
    blobs.set(url, made);
    return made;
  }

  function forgetBlobs() {
    for (const made of blobs.values()) made.then((u) => URL.revokeObjectURL(u), () => {});
    blobs.clear();
  }

  function formatSize(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    const units = ['KB', 'MB', 'GB'];
    let n = bytes / 1024;
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
  }

  const INLINE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
  const MAX_FILES = 10;

  /** A file picked to send, as a pending message shows it until it is uploaded. */
  function localAttachment(file) {
    const isImage = INLINE_TYPES.includes(file.type);
    return {
      local: true,
      file,
      filename: file.name || 'pasted file',
      size: file.size,
      content_type: file.type || 'application/octet-stream',
      isImage,
      previewURL: isImage ? URL.createObjectURL(file) : null,
      progress: 0,
      id: null,
      uploading: false,
    };
  }

  /** Uploads `a` (a local attachment) as a browser form does; resolves to the upload. */
  function uploadFile(a, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', `${API}/uploads/`);
      xhr.setRequestHeader('Authorization', `Token ${state.token}`);
      xhr.responseType = 'json';
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      });
      xhr.addEventListener('load', () => {
        setRestDown(false);
        if (xhr.status === 201) resolve(xhr.response);
        else reject(new ApiError(xhr.status, xhr.response));
      });
      xhr.addEventListener('error', () => { setRestDown(true); reject(new ApiError(0, null)); });
      const form = new FormData();
      form.append('file', a.file, a.filename);
      xhr.send(form);
    });
  }

  async function downloadFile(a) {
    try {
      const url = await fetchBlob(a.url);
      const link = h('a', { href: url, download: a.filename, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (e) {
      toast(e.status === 404 ? 'That file is no longer here.' : 'Could not download the file.');
    }
  }

  function openViewer(a) {
    const dialog = $('viewer');
    $('viewer-title').textContent = a.filename;
    $('viewer-size').textContent = `${a.width} × ${a.height}, ${formatSize(a.size)}`;
    const img = $('viewer-image');
    img.removeAttribute('src');
    img.alt = a.filename;
    img.width = a.width;
    img.height = a.height;
    $('viewer-download').onclick = () => downloadFile(a);
    fetchBlob(a.preview_url).then((u) => { img.src = u; }, () => toast('Could not load the image.'));
    dialog.showModal();
  }

  // Files picked but not sent yet.
  const picked = [];

  function addFiles(files) {
    for (const file of files) {
      if (picked.length >= MAX_FILES) {
        toast(`A message carries at most ${MAX_FILES} files.`);
        break;
      }
      picked.push(file);
    }
    renderPicked();
    $('input').focus();
  }

  function renderPicked() {
    const list = $('attach-list');
    list.replaceChildren(...picked.map((file, i) => h('li', { class: 'picked' },
      icon('file'),
      h('span', { class: 'att-name', text: file.name || 'pasted file' }),
      h('span', { class: 'att-size', text: formatSize(file.size) }),
      h('button', {
        type: 'button', class: 'icon-btn small remove', 'aria-label': `Remove ${file.name || 'pasted file'}`,
        onclick: () => { picked.splice(i, 1); renderPicked(); $('input').focus(); },
      }, icon('close')))));
    show(list, picked.length > 0);
  }

  // ---------------------------------------------------------------- composer

  function autosize() {
    const input = $('input');
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  }

  function sendFromComposer() {
    const input = $('input');
    if (state.view && state.view.submit(input.value, picked.slice())) {
      input.value = '';
      picked.length = 0;
      renderPicked();
      autosize();
    }
  }

  // ---------------------------------------------------------------- mention autocomplete

  const mentioning = { matches: [], at: 0, start: -1 };

  /** The `@name` being typed just before the caret, if any: its start and text. */
  function mentionAtCaret() {
    const input = $('input');
    const before = input.value.slice(0, input.selectionStart);
    const m = /(^|[^\w@.+-])@([\w@.+-]*)$/u.exec(before);
    return m ? { start: before.length - m[2].length - 1, text: m[2].toLowerCase() } : null;
  }

  function updateMentionList() {
    const typed = state.view ? mentionAtCaret() : null;
    const members = typed ? state.view.room.members.filter((u) => u.id !== state.me.id
      && (u.username.toLowerCase().startsWith(typed.text)
        || displayName(u).toLowerCase().startsWith(typed.text))) : [];
    mentioning.matches = members.slice(0, 8);
    mentioning.at = 0;
    mentioning.start = typed ? typed.start : -1;
    renderMentionList();
  }

  function renderMentionList() {
    const list = $('mention-list');
    list.replaceChildren(...mentioning.matches.map((u, i) => h('li', {
      class: `mention-option${i === mentioning.at ? ' active' : ''}`,
      role: 'option',
      'aria-selected': i === mentioning.at ? 'true' : 'false',
      dataset: { username: u.username },
      onmousedown: (e) => { e.preventDefault(); pickMention(i); },
    }, h('strong', { text: displayName(u) }), ` @${u.username}`)));
    show(list, mentioning.matches.length > 0);
  }

  function pickMention(i) {
    const u = mentioning.matches[i];
    if (!u) return;
    const input = $('input');
    const caret = input.selectionStart;
    const text = `@${u.username} `;
    input.value = input.value.slice(0, mentioning.start) + text + input.value.slice(caret);
    const at = mentioning.start + text.length;
    input.setSelectionRange(at, at);
    mentioning.matches = [];
    renderMentionList();
    autosize();
  }

  /** Arrow keys, Enter and Tab choose from the open list; Escape closes it. True if used. */
  function mentionKeys(e) {
    if (!mentioning.matches.length) return false;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const n = mentioning.matches.length;
      mentioning.at = (mentioning.at + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
      renderMentionList();
    } else if (e.key === 'Enter' || e.key === 'Tab') {
      pickMention(mentioning.at);
    } else if (e.key === 'Escape') {
      mentioning.matches = [];
      renderMentionList();
    } else {
      return false;
    }
    e.preventDefault();
    return true;
  }

  // ---------------------------------------------------------------- new chat dialog

  const picker = { selected: new Map(), searchTimer: null, seq: 0 };

  function openNewChat() {
    picker.selected.clear();
    $('user-search').value = '';
    $('group-name').value = '';
    setFormError('new-chat-error', null);
    updatePicker();
    $('new-chat-dialog').showModal();
    $('user-search').focus();
    loadUsers('');
  }

  async function loadUsers(search) {
    const seq = ++picker.seq;
    const query = new URLSearchParams({ limit: '100', exclude: String(state.me.id) });
    if (search) query.set('search', search);
    try {
      const page = await api('GET', `/users/?${query}`);
      if (seq !== picker.seq) return;
      renderUsers(page.results);
    } catch (e) {
      if (seq === picker.seq) setFormError('new-chat-error', e.message);
    }
  }

  function renderUsers(users) {
    const list = $('user-list');
    list.replaceChildren(...users.map((u) => {
      const box = h('input', {
        type: 'checkbox',
        value: String(u.id),
        onchange: (e) => {
          if (e.target.checked) picker.selected.set(u.id, u);
          else picker.selected.delete(u.id);
          updatePicker();
        },
      });
      box.checked = picker.selected.has(u.id);
      return h('li', null, h('label', { class: 'user-row', dataset: { username: u.username } },
        box,
        avatar(displayName(u), u.id),
        h('span', { class: 'user-text' },
          h('span', { class: 'user-name', text: displayName(u) }),
          h('span', { class: 'muted small', text: `@${u.username}` }))));
    }));
    show($('user-list-empty'), users.length === 0);
  }

  function updatePicker() {
    const n = picker.selected.size;
    const submit = $('new-chat-submit');
    submit.disabled = n === 0;
    if (n <= 1) {
      const only = n === 1 ? [...picker.selected.values()][0] : null;
      submit.textContent = only ? `Message ${displayName(only)}` : 'Start chat';
    } else {
      submit.textContent = `Create group of ${n + 1}`;
    }
    show($('group-name-field'), n > 1);
  }

  async function onCreateChat(event) {
    event.preventDefault();
    if (!picker.selected.size) return;
    const members = [...picker.selected.keys()];
    const body = { members };
    const name = $('group-name').value.trim();
    if (members.length > 1 && name) body.name = name;
    await withBusy($('new-chat-submit'), async () => {
      try {
        const room = await api('POST', '/chats/', body);
        if (!state.rooms.some((r) => r.room_id === room.room_id)) state.rooms.unshift(room);
        $('new-chat-dialog').close();
        renderRooms();
        location.hash = `#/c/${room.room_id}`;
        refreshRooms();
      } catch (e) {
        setFormError('new-chat-error', e.message);
      }
    });
    updatePicker();
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    $('new-chat').append(icon('plus'));
    $('logout').append(icon('logout'));
    $('back').append(icon('back'));
    $('leave').append(icon('leave'));
    $('send').append(icon('send'));
    $('new-chat-close').append(icon('close'));
    $('jump').prepend(icon('down'));

    $('login-form').addEventListener('submit', onLogin);
    $('signup-form').addEventListener('submit', onSignup);
    $('to-signup').addEventListener('click', () => showAuth('signup'));
    $('to-login').addEventListener('click', () => showAuth('login'));
    $('logout').addEventListener('click', onLogout);
    $('retry').addEventListener('click', retryNow);
    $('update-reload').addEventListener('click', reloadForUpdate);
    $('alerts').addEventListener('change', onAlertSetting);
    document.addEventListener('pointerdown', unlockAudio);
    document.addEventListener('keydown', unlockAudio);

    $('new-chat').addEventListener('click', openNewChat);
    $('empty-new-chat').addEventListener('click', openNewChat);
    $('new-chat-close').addEventListener('click', () => $('new-chat-dialog').close());
    $('new-chat-cancel').addEventListener('click', () => $('new-chat-dialog').close());
    $('new-chat-form').addEventListener('submit', onCreateChat);
    $('user-search').addEventListener('input', (e) => {
      clearTimeout(picker.searchTimer);
      const value = e.target.value.trim();
      picker.searchTimer = setTimeout(() => loadUsers(value), 200);
    });
    $('room-filter').addEventListener('input', (e) => {
      state.filter = e.target.value.trim();
      renderRooms();
      if (!state.filter) closeSearch();
    });
    $('room-filter').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && state.filter) {
        e.preventDefault();
        searchMessages(state.filter);
      } else if (e.key === 'Escape') {
        closeSearch();
      }
    });
    $('search-close').addEventListener('click', closeSearch);
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closePicker(); });
    document.addEventListener('keydown', onShortcut);
    document.addEventListener('mousedown', (e) => {
      if (!$('reaction-picker').contains(e.target) && !e.target.closest('.more-reactions')) closePicker();
    });

    $('back').addEventListener('click', () => { location.hash = ''; });
    $('leave').addEventListener('click', onLeave);
    $('editing-cancel').addEventListener('click', () => state.view && state.view.cancelEdit());
    $('replying-cancel').addEventListener('click', () => state.view && state.view.cancelReply());
    $('notify').addEventListener('click', () => {
      Notification.requestPermission().then(renderNotifyPrompt, renderNotifyPrompt);
    });
    $('attach').append(icon('clip'));
    $('attach').addEventListener('click', () => $('file-input').click());
    $('file-input').addEventListener('change', (e) => {
      addFiles([...e.target.files]);
      e.target.value = '';
    });
    $('input').addEventListener('paste', (e) => {
      const files = [...((e.clipboardData && e.clipboardData.files) || [])];
      if (files.length) {
        e.preventDefault();
        addFiles(files);
      }
    });
    $('room-view').addEventListener('dragover', (e) => {
      if (e.dataTransfer && [...e.dataTransfer.types].includes('Files')) {
        e.preventDefault();
        $('room-view').classList.add('dropping');
      }
    });
    $('room-view').addEventListener('dragleave', (e) => {
      if (e.target === $('room-view')) $('room-view').classList.remove('dropping');
    });
    $('room-view').addEventListener('drop', (e) => {
      $('room-view').classList.remove('dropping');
      const files = [...((e.dataTransfer && e.dataTransfer.files) || [])];
      if (files.length) {
        e.preventDefault();
        addFiles(files);
      }
    });
    $('viewer-close').append(icon('close'));
    $('viewer-close').addEventListener('click', () => $('viewer').close());
    $('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      sendFromComposer();
      $('input').focus();
    });
    $('input').addEventListener('keydown', (e) => {
      if (mentionKeys(e)) return;
      if (e.key === 'ArrowUp' && state.view && !$('input').value && state.view.editing === null) {
        if (state.view.editLast()) e.preventDefault();
        return;
      }
      if (e.key === 'Escape' && state.view && (state.view.editing !== null || state.view.replying)) {
        e.preventDefault();
        state.view.cancelEdit();
        state.view.cancelReply();
        return;
      }
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        sendFromComposer();
      }
    });
    $('input').addEventListener('input', () => {
      autosize();
      updateMentionList();
      if (state.view) state.view.onInput();
    });
    $('load-older').addEventListener('click', () => state.view && state.view.loadOlder());
    $('messages').addEventListener('scroll', () => {
      if (state.view) state.view.maybeMarkRead();
    }, { passive: true });
    $('jump').addEventListener('click', () => {
      const box = $('messages');
      box.scrollTop = box.scrollHeight;
      if (state.view) state.view.maybeMarkRead();
    });

    window.addEventListener('hashchange', route);
    window.addEventListener('online', retryNow);
    window.addEventListener('offline', renderConnection);
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState !== 'visible') return;
      stopFlash();
      checkForUpdate();
      refreshRooms();
      if (state.view) state.view.maybeMarkRead();
    });
  }

  async function boot() {
    wire();
    loadAlertSetting();
    registerWorker();
    const saved = session.load();
    if (!saved || !saved.token) {
      showAuth('login');
      return;
    }
    state.token = saved.token;
    try {
      const me = await api('GET', '/me/');
      enterApp(me);
    } catch (e) {
      if (e.status === 401) return; // sessionExpired() already showed the login screen
      if (saved.user) {
        // The server is unreachable: show what we know and keep retrying.
        enterApp(saved.user);
      } else {
        showAuth('login', e.message);
      }
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
