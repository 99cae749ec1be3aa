// Live updates: an element with data-refresh is replaced every few seconds by the same part of the
// page rendered again on the server (short polling; no build step, no framework). A form being used
// is never replaced under the user's hand; a signed-out poll goes to the sign-in page.
"use strict";
(function () {
  const PERIOD_MS = 2000;
  function poll(element) {
    const url = element.getAttribute("data-refresh");
    let busy = false;
    setInterval(async function () {
      if (busy || document.hidden || element.contains(document.activeElement) && document.activeElement !== document.body) {
        return;
      }
      busy = true;
      try {
        const response = await fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}});
        if (response.status === 401) {
          window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
        } else if (response.ok) {
          const html = await response.text();
          if (html !== element.innerHTML) {
            element.innerHTML = html;
          }
          element.setAttribute("data-updated", String(Date.now()));
        }
      } catch (e) {
        element.setAttribute("data-stale", "the node does not answer");
      } finally {
        busy = false;
      }
    }, PERIOD_MS);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(poll);
  });
})();
