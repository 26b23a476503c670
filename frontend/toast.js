/** A short notice that something happened out of sight ("Started …"), read out by screen readers. */

export class Toast {
  constructor(el, ms = 6000) {
    this.el = el;
    this.ms = ms;
    this.timer = null;
  }

  show(text) {
    this.el.textContent = text;
    this.el.hidden = false;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => (this.el.hidden = true), this.ms);
  }
}
