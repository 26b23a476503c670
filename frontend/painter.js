/** Paints a layer × step grid into an image, one pixel per cell, through a colour look-up table. */

/** 256 RGB entries interpolated linearly between the stops [[position, "#rrggbb"], ...]. */
export function colourTable(stops, size = 256) {
  const rgb = stops.map(([p, hex]) => [p, [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16))]);
  const table = new Uint8ClampedArray(size * 3);
  for (let k = 0; k < size; k++) {
    const t = k / (size - 1);
    let j = 1;
    while (j < rgb.length - 1 && rgb[j][0] < t) j++;
    const [p0, c0] = rgb[j - 1];
    const [p1, c1] = rgb[j];
    const f = p1 > p0 ? Math.min(1, Math.max(0, (t - p0) / (p1 - p0))) : 0;
    for (let c = 0; c < 3; c++) table[k * 3 + c] = c0[c] + f * (c1[c] - c0[c]);
  }
  return table;
}

function hexRGB(hex) {
  return [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16));
}

/**
 * The image of one heatmap. Pixels live in one ImageData with spare columns, so appending a
 * column costs one column of writes; `url()` encodes only the columns in use.
 */
export class Painter {
  constructor(rows, { table, blank, bad }) {
    this.rows = rows;
    this.table = table;
    this.blank = hexRGB(blank);
    this.bad = hexRGB(bad);
    this.image = new ImageData(64, Math.max(1, rows));
    this.canvas = document.createElement("canvas");
  }

  grow(columns) {
    if (columns <= this.image.width) return;
    let width = this.image.width;
    while (width < columns) width *= 2;
    const next = new ImageData(width, this.image.height);
    const old = this.image;
    for (let r = 0; r < old.height; r++) {
      next.data.set(old.data.subarray(r * old.width * 4, (r + 1) * old.width * 4), r * width * 4);
    }
    this.image = next;
  }

  /** Column `i` from per-row values (row 0 = input layer, drawn at the bottom); mask marks non-finite. */
  paint(i, values, mask, lo, hi) {
    this.grow(i + 1);
    const { data, width } = this.image;
    const scale = hi > lo ? (this.table.length / 3 - 1) / (hi - lo) : 0;
    for (let l = 0; l < this.rows; l++) {
      const at = ((this.rows - 1 - l) * width + i) * 4;
      const v = values[l];
      let c;
      if (mask && mask[l]) c = this.bad;
      else if (v === null || v === undefined || Number.isNaN(v)) c = this.blank;
      else {
        const k = Math.max(0, Math.min(this.table.length / 3 - 1, Math.round((v - lo) * scale))) * 3;
        c = [this.table[k], this.table[k + 1], this.table[k + 2]];
      }
      data[at] = c[0];
      data[at + 1] = c[1];
      data[at + 2] = c[2];
      data[at + 3] = 255;
    }
  }

  /** A PNG data URL of the first `columns` columns. */
  url(columns) {
    this.canvas.width = Math.max(1, columns);
    this.canvas.height = this.image.height;
    this.canvas.getContext("2d").putImageData(this.image, 0, 0, 0, 0, columns, this.image.height);
    return this.canvas.toDataURL();
  }
}
