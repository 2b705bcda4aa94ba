// odin console: progressive enhancement only. Every page works without it.
// The copy button: shown only when the Clipboard API is there.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (btn) {
    if (!navigator.clipboard) {
      return;
    }
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var id = btn.getAttribute("data-copy");
      var input = document.getElementById(id);
      var status = document.querySelector('[data-copied="' + id + '"]');
      navigator.clipboard.writeText(input.value).then(function () {
        if (status) { status.textContent = "Copied to the clipboard."; }
      }, function () {
        input.select();
        if (status) { status.textContent = "Could not copy: the key is selected, copy it with your keyboard."; }
      });
    });
  });
});
