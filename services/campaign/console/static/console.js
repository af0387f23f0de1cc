// Small progressive enhancements; every screen works without them.
document.addEventListener("click", (event) => {
  for (const menu of document.querySelectorAll("details.row-menu[open]")) {
    if (!menu.contains(event.target)) menu.removeAttribute("open");
  }
  const toggle = event.target.closest("[data-toggle-nav]");
  if (toggle) {
    const nav = document.getElementById("nav");
    const open = nav.classList.toggle("open");
    toggle.setAttribute("aria-expanded", String(open));
  }
  const copy = event.target.closest("[data-copy]");
  if (copy && navigator.clipboard) {
    navigator.clipboard.writeText(copy.dataset.copy);
    copy.textContent = "Copiado";
  }
  const insert = event.target.closest("[data-insert]");
  if (insert) {
    const target = document.getElementById(insert.dataset.target);
    if (target) {
      const start = target.selectionStart ?? target.value.length;
      const end = target.selectionEnd ?? target.value.length;
      target.value = target.value.slice(0, start) + insert.dataset.insert + target.value.slice(end);
      target.focus();
      target.selectionStart = target.selectionEnd = start + insert.dataset.insert.length;
      target.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
