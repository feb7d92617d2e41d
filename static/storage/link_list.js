// Upload links page: copy a new link to the clipboard (the field is selected where that is refused).
for (const button of document.querySelectorAll("[data-copy]")) {
  button.addEventListener("click", async () => {
    const field = document.querySelector(button.dataset.copy);
    const status = document.querySelector("[data-copy-status]");
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      if (status) status.textContent = "Copied.";
    } catch {
      if (status) status.textContent = "Press Ctrl+C (⌘C) to copy the selected link.";
    }
  });
}
