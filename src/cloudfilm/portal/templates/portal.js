// Small vanilla JS for the patient pages: JSON posts with the CSRF token, share creation,
// revocation. No framework, no build step; the page works from the server's HTML.
(function () {
  'use strict';
  var csrf = (document.querySelector('meta[name=csrf-token]') || {}).content || '';
  var en = document.documentElement.lang === 'en';

  function send(method, url, body) {
    return fetch(url, {
      method: method,
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) {
          var msg = (en ? data.en : data.zh) || data.detail || ('HTTP ' + res.status);
          throw new Error(msg);
        }
        return data;
      });
    });
  }

  function show(form, text, ok) {
    var el = form.querySelector('.msg');
    if (el) { el.textContent = text; el.className = ok ? 'msg ok' : 'msg'; }
  }

  document.querySelectorAll('form.api').forEach(function (form) {
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var body = {};
      new FormData(form).forEach(function (v, k) { body[k] = v; });
      if (form.dataset.token) body.token = form.dataset.token;
      if (form.dataset.phoneFrom) {
        var phone = document.querySelector('input[name=phone]');
        body.phone = phone ? phone.value : '';
      }
      var button = form.querySelector('button');
      if (button) button.disabled = true;
      send('POST', form.dataset.api, body).then(function (data) {
        if (form.dataset.keep) { show(form, (en ? data.en : data.zh) || 'OK', true); return; }
        window.location.assign(data.next || window.location.href);
      }).catch(function (err) { show(form, err.message, false); })
        .then(function () { if (button) button.disabled = false; });
    });
    if (form.classList.contains('auto')) form.requestSubmit();
  });

  var shareForm = document.querySelector('form.share-form');
  if (shareForm) {
    shareForm.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var f = new FormData(shareForm);
      var days = f.get('days') === 'custom' ? Number(f.get('custom_days')) : Number(f.get('days'));
      var films = [shareForm.dataset.film].concat(f.getAll('film'));
      var body = {
        film_ids: films, days: days, label: f.get('label') || '',
        code: f.get('code') || '', allow_download: f.get('allow_download') === 'on',
      };
      send('POST', '/api/shares', body).then(function (data) {
        var box = document.querySelector('.share-result');
        box.hidden = false;
        box.querySelector('.share-link').value = data.link;
        box.querySelector('.qr').innerHTML = data.qr_svg;
        show(shareForm, '', true);
      }).catch(function (err) { show(shareForm, err.message, false); });
    });
  }

  document.addEventListener('click', function (ev) {
    var t = ev.target;
    if (t.classList && t.classList.contains('revoke')) {
      t.disabled = true;
      send('DELETE', '/api/shares/' + encodeURIComponent(t.dataset.share)).then(function () {
        window.location.reload();
      }).catch(function (err) { t.disabled = false; alert(err.message); });
    }
    if (t.classList && t.classList.contains('copy')) {
      var input = t.parentNode.querySelector('.share-link');
      input.select();
      if (navigator.clipboard) navigator.clipboard.writeText(input.value);
    }
  });
})();
