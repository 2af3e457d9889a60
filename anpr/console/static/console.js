// The console's browser side: live hits and passes (Server-Sent Events), acknowledgements, local times.
// No library: the page's server-rendered markup is the model; this file adds what arrives live.
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const T = (() => {
    const blob = $('#i18n');
    try { return blob ? JSON.parse(blob.textContent) : {}; } catch (e) { return {}; }
  })();
  const t = (key) => T[key] || key;
  const csrf = () => ($('meta[name="csrf-token"]') || {}).content || '';
  const lang = document.documentElement.lang || undefined;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  // -- times in the browser's zone ---------------------------------------------------------------

  function localTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString(lang, {
      year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
  }

  function timeTag(iso) {
    return el('time', { datetime: iso, text: localTime(iso) });
  }

  function localiseTimes(root = document) {
    for (const node of $$('time[datetime]', root)) node.textContent = localTime(node.getAttribute('datetime'));
  }

  function pad(n) { return String(n).padStart(2, '0'); }

  // Forms carry the browser's UTC offset, so the server reads typed times as local ones; stored UTC
  // times shown for editing (data-utc) are turned into local ones to match.
  function prepareForms() {
    const offset = String(new Date().getTimezoneOffset());
    for (const input of $$('input[name="tz"]')) input.value = offset;
    for (const input of $$('input[type="datetime-local"][data-utc]')) {
      const iso = input.getAttribute('data-utc');
      if (!iso) continue;
      const d = new Date(iso);
      if (Number.isNaN(d.getTime())) continue;
      input.value = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
    }
    const language = $('#language select[name="language"]');
    if (language) language.addEventListener('change', () => language.form.submit());
  }

  // -- sound and banner -------------------------------------------------------------------------

  let audio = null;
  function unlockAudio() {
    // Browsers start audio only after a user gesture: the first click or key prepares it.
    if (audio || !(window.AudioContext || window.webkitAudioContext)) return;
    audio = new (window.AudioContext || window.webkitAudioContext)();
  }
  document.addEventListener('click', unlockAudio, { once: true, capture: true });
  document.addEventListener('keydown', unlockAudio, { once: true, capture: true });

  function beep(severity) {
    if (!audio) {
      try { unlockAudio(); } catch (e) { return; }
      if (!audio) return;
    }
    if (audio.state === 'suspended') audio.resume().catch(() => {});
    const tones = severity === 'stop' ? [880, 660, 880] : severity === 'check' ? [880, 660] : [660];
    const start = audio.currentTime + 0.02;
    tones.forEach((freq, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = 'square';
      osc.frequency.value = freq;
      const at = start + i * 0.18;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.25, at + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.15);
      osc.connect(gain).connect(audio.destination);
      osc.start(at);
      osc.stop(at + 0.16);
    });
  }

  function severityLabel(sev) { return t(`sev_${sev}`); }

  function showBanner(hit) {
    const banner = $('#hit-banner');
    if (!banner) return;
    const ev = hit.event;
    const sev = hit.entry.severity;
    banner.className = `sev-${sev}`;
    banner.replaceChildren(
      el('strong', { text: t('new_hit') }),
      ' ',
      el('a', { class: 'plate', href: '/hits', text: ev.plate }),
      ' · ',
      el('span', { text: severityLabel(sev) }),
      ' · ',
      el('span', { text: `${t('lane')} ${ev.lane}` }),
      ' ',
      el('a', { href: `/events/${encodeURIComponent(ev.event_id)}`, class: 'button secondary', text: t('open_event') }),
      ' ',
      el('button', { type: 'button', class: 'secondary dismiss', text: t('dismiss') }),
    );
    banner.hidden = false;
    $('.dismiss', banner).addEventListener('click', () => { banner.hidden = true; });
  }

  // -- hits ---------------------------------------------------------------------------------------

  function dispositions() {
    const box = $('#hits') || $('#hits-of-event');
    const listed = box && box.getAttribute('data-dispositions');
    return listed ? listed.split(',') : ['checked', 'stopped', 'false_match'];
  }

  function hitCard(hit) {
    const ev = hit.event;
    const en = hit.entry;
    const sev = en.severity;
    const select = el('select', { name: 'disposition', 'aria-label': t('disposition') },
      ...dispositions().map((d) => el('option', { value: d, text: t(d) })));
    return el('article', { class: `hit sev-${sev} new`, 'data-hit-id': hit.hit_id },
      el('div', { class: 'hit-head' },
        el('a', { class: 'plate', href: `/events/${encodeURIComponent(ev.event_id)}`, text: ev.plate }),
        ' ',
        el('span', { class: 'severity', title: severityLabel(sev), text: sev }),
        ' ',
        el('span', { class: 'severity-label', text: severityLabel(sev) }),
        ' ',
        el('span', { class: 'matched-as', 'data-value': hit.matched_as, text: t(hit.matched_as) })),
      el('dl', { class: 'facts' },
        el('dt', { text: t('listed_as') }), el('dd', { class: 'entry-plate', text: en.plate }),
        el('dt', { text: t('reason') }), el('dd', { class: 'reason', text: en.reason || '' }),
        el('dt', { text: t('lane') }), el('dd', { text: `${ev.lane} · ${t(ev.direction)}` }),
        el('dt', { text: t('seen') }), el('dd', {}, timeTag(ev.best_seen))),
      el('div', { class: 'ack-form' },
        select,
        el('input', { type: 'text', name: 'note', maxlength: 2000, placeholder: t('note'), 'aria-label': t('note') }),
        el('button', { type: 'button', 'data-action': 'ack', text: t('ack') }),
        el('span', { class: 'ack-error', role: 'alert' })));
  }

  function insertHit(hit) {
    const box = $('#hits');
    if (!box || box.querySelector(`[data-hit-id="${CSS.escape(hit.hit_id)}"]`)) return;
    box.prepend(hitCard(hit));  // the newest on top; a reload sorts by urgency
    const empty = $('#no-hits');
    if (empty) empty.hidden = true;
  }

  function markAcked(ack) {
    for (const node of $$(`[data-hit-id="${CSS.escape(ack.hit_id)}"]`)) {
      if (node.getAttribute('data-acked') === 'true') continue;
      node.setAttribute('data-acked', 'true');
      const form = node.querySelector('.ack-form');
      const info = el('p', { class: 'ack-info' },
        `${t('acked_by')} `,
        el('span', { class: 'acked-by', text: ack.by }),
        ` · ${ack.disposition ? t(ack.disposition) : ''}`,
        ack.note ? ' · ' : '',
        ack.note ? el('span', { class: 'ack-note', text: ack.note }) : null,
        ' · ',
        timeTag(ack.at));
      if (form) form.replaceWith(info); else node.append(info);
      const pending = node.querySelector('.not-archived');
      if (pending) pending.remove();
    }
  }

  async function acknowledge(button) {
    const card = button.closest('[data-hit-id]');
    const form = button.closest('.ack-form');
    if (!card || !form) return;
    const error = form.querySelector('.ack-error');
    error.textContent = '';
    button.disabled = true;
    try {
      const resp = await fetch(`/api/hits/${encodeURIComponent(card.getAttribute('data-hit-id'))}/ack`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf() },
        body: JSON.stringify({
          disposition: form.querySelector('select[name="disposition"]').value,
          note: form.querySelector('input[name="note"]').value,
        }),
      });
      const body = await resp.json().catch(() => ({}));
      if (resp.ok) { markAcked(body); return; }
      if (resp.status === 401) { window.location.assign(`/login?next=${encodeURIComponent(location.pathname)}`); return; }
      if (resp.status === 409 && body.by) { markAcked({ hit_id: card.getAttribute('data-hit-id'), ...body }); return; }
      error.textContent = body.message || t('ack_failed');
    } catch (e) {
      error.textContent = t('ack_failed');
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener('click', (e) => {
    const button = e.target.closest('button[data-action="ack"]');
    if (button) { e.preventDefault(); acknowledge(button); }
  });

  // -- lanes --------------------------------------------------------------------------------------

  function passRow(ev) {
    const image = ev.plate_image
      ? el('img', { class: 'plate-crop', src: `/events/${encodeURIComponent(ev.event_id)}/plate.jpg`, alt: ev.plate })
      : el('span', { class: 'plate-crop none' });
    return el('li', { class: 'pass new', 'data-event-id': ev.event_id },
      image,
      el('div', { class: 'pass-main' },
        el('a', { class: 'plate', href: `/events/${encodeURIComponent(ev.event_id)}`, text: ev.plate }),
        el('span', { class: 'confidence', text: `${Math.round(ev.confidence * 100)} %` })),
      el('div', { class: 'meta' },
        el('span', { class: 'country', text: ev.country || '' }),
        el('span', { class: 'direction', 'data-direction': ev.direction, text: t(ev.direction) }),
        el('span', { class: 'seen' }, timeTag(ev.best_seen)),
        ev.linked_event_id
          ? el('a', {
            class: 'trailer-link', href: `/events/${encodeURIComponent(ev.linked_event_id)}`, text: `${t('trailer_of')} →`,
          })
          : null));
  }

  function insertPass(ev) {
    const lanes = $('#lanes');
    if (!lanes) return;
    let section = $$('section[data-lane]', lanes).find((s) => s.getAttribute('data-lane') === ev.lane);
    if (!section) {
      const template = $('#lane-template');
      if (!template) return;
      section = template.content.firstElementChild.cloneNode(true);
      section.setAttribute('data-lane', ev.lane);
      $('.lane-name', section).textContent = ev.lane;
      lanes.append(section);
      const none = $('#no-lanes');
      if (none) none.remove();
    }
    const list = $('.passes', section);
    if (list.querySelector(`[data-event-id="${CSS.escape(ev.event_id)}"]`)) return;
    list.prepend(passRow(ev));
    const keep = Number(lanes.getAttribute('data-history')) || 10;
    while (list.children.length > keep) list.lastElementChild.remove();
  }

  // -- the live stream ----------------------------------------------------------------------------

  const announced = new Set();  // hits already announced: a reconnect may replay a few

  // Where the stream resumes if the browser gives up on it (after an HTTP error it does not retry by itself).
  let resumeFrom = null;

  function connect() {
    const kinds = document.body.getAttribute('data-stream-kinds');
    if (!kinds || !$('#whoami')) return;
    if (resumeFrom === null) resumeFrom = document.body.getAttribute('data-stream-from') || '';
    const from = resumeFrom;
    const status = $('#live-status');
    const setStatus = (state) => {
      if (!status) return;
      status.setAttribute('data-state', state);
      status.textContent = state === 'ok' ? t('live_ok') : t('live_lost');
    };
    const source = new EventSource(`/api/stream?kinds=${encodeURIComponent(kinds)}&from=${encodeURIComponent(from)}`);
    const parse = (e) => {
      if (e.lastEventId) resumeFrom = e.lastEventId;
      try { return JSON.parse(e.data); } catch (err) { return null; }
    };
    source.addEventListener('open', () => setStatus('ok'));
    source.addEventListener('error', () => {
      setStatus('lost');
      // A 401 (session over) closes the stream for good: back to the login form.
      if (source.readyState === EventSource.CLOSED) {
        fetch('/api/hits?unacked=1', { credentials: 'same-origin' }).then((r) => {
          if (r.status === 401) window.location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
          else setTimeout(connect, 3000);
        }).catch(() => setTimeout(connect, 3000));
      }
    });
    source.addEventListener('hit', (e) => {
      const hit = parse(e);
      if (!hit) return;
      const known = announced.has(hit.hit_id) || document.querySelector(`[data-hit-id="${CSS.escape(hit.hit_id)}"]`);
      announced.add(hit.hit_id);
      insertHit(hit);
      if (!known) {
        showBanner(hit);
        beep(hit.entry.severity);
      }
    });
    source.addEventListener('ack', (e) => {
      const ack = parse(e);
      if (ack) markAcked(ack);
    });
    source.addEventListener('pass', (e) => {
      const ev = parse(e);
      if (ev) insertPass(ev);
    });
  }

  function start() {
    localiseTimes();
    prepareForms();
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
