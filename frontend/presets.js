/** One-click presets from /api/presets: each button fills the form and starts the run. */

export function renderPresets(container, presets, onRun) {
  container.replaceChildren(
    ...presets.map((preset) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "preset";
      button.dataset.preset = preset.id;
      button.title = preset.description ?? "";
      const title = Object.assign(document.createElement("strong"), { textContent: preset.title ?? preset.id });
      const about = Object.assign(document.createElement("span"), { textContent: preset.description ?? "" });
      button.append(title, about);
      button.addEventListener("click", () => onRun(preset));
      return button;
    }),
  );
}
