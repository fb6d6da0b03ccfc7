// The task timeline on a canvas: one lane per worker, a bar per task, an arrow per
// dependency (the task that returned an argument -> the task that read it).
// Wheel zooms around the pointer, dragging pans; "live" keeps the right edge at now.
// After each draw the canvas carries data-bars / data-arrows (what it drew) and
// window.rayliteTimeline the same numbers, for tests and curious people.
"use strict";

(function () {
  const LANE_H = 22;
  const BAR_H = 14;
  const LABEL_W = 170;
  const AXIS_H = 26;
  const MIN_SPAN = 1e-4; // seconds: the deepest zoom

  function hue(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return h % 360;
  }

  function niceStep(span, px) {
    const raw = span / Math.max(px / 110, 1);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
    return 10 * p;
  }

  function label(dt, step) {
    if (step < 1e-3) return `${(dt * 1e6).toFixed(0)} µs`;
    if (step < 1) return `${(dt * 1e3).toFixed(step < 1e-2 ? 1 : 0)} ms`;
    return `${dt.toFixed(step < 10 ? 1 : 0)} s`;
  }

  class RayliteTimeline {
    constructor(canvas) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.data = null;
      this.t0 = 0;
      this.t1 = 1;
      this.span = 0; // the live window's width, set by the first answer
      this.origin = null; // the axis shows seconds since the first task seen
      this.live = document.getElementById("timeline-live");
      this.info = document.getElementById("timeline-info");
      this.tip = document.getElementById("timeline-tip");
      this.drag = null;
      this.drawn = [];
      this.refetch = null;
      this.install();
    }

    install() {
      const c = this.canvas;
      c.addEventListener("wheel", (e) => {
        e.preventDefault();
        const f = Math.pow(1.0015, e.deltaY);
        this.zoom(f, this.timeAt(e.offsetX));
      }, { passive: false });
      c.addEventListener("mousedown", (e) => {
        this.drag = { x: e.clientX, t0: this.t0, t1: this.t1 };
      });
      window.addEventListener("mousemove", (e) => {
        if (this.drag) {
          const dt = ((e.clientX - this.drag.x) / this.plotWidth()) * (this.drag.t1 - this.drag.t0);
          if (dt !== 0) this.stopLive();
          this.t0 = this.drag.t0 - dt;
          this.t1 = this.drag.t1 - dt;
          this.draw();
          this.later();
        } else if (e.target === c) {
          this.hover(e.offsetX, e.offsetY, e.pageX, e.pageY);
        }
      });
      window.addEventListener("mouseup", () => { this.drag = null; });
      c.addEventListener("mouseleave", () => { this.tip.hidden = true; });
      document.getElementById("timeline-fit").addEventListener("click", () => this.fit());
      document.getElementById("timeline-zoom-in").addEventListener("click", () => this.zoom(0.5));
      document.getElementById("timeline-zoom-out").addEventListener("click", () => this.zoom(2));
      this.live.addEventListener("change", () => { if (this.live.checked) this.poll(); });
      window.addEventListener("resize", () => this.draw());
    }

    stopLive() { this.live.checked = false; }

    plotWidth() { return Math.max(this.canvas.clientWidth - LABEL_W, 10); }

    timeAt(x) { return this.t0 + ((x - LABEL_W) / this.plotWidth()) * (this.t1 - this.t0); }

    xAt(t) { return LABEL_W + ((t - this.t0) / (this.t1 - this.t0)) * this.plotWidth(); }

    zoom(factor, around) {
      const mid = around === undefined ? (this.t0 + this.t1) / 2 : around;
      const span = Math.max((this.t1 - this.t0) * factor, MIN_SPAN);
      const left = (mid - this.t0) / (this.t1 - this.t0);
      this.t0 = mid - left * span;
      this.t1 = this.t0 + span;
      this.stopLive();
      this.draw();
      this.later();
    }

    later() { // fetch the window the user moved to, once they pause
      clearTimeout(this.refetch);
      this.refetch = setTimeout(() => this.poll(), 250);
    }

    fit() {
      const d = this.data;
      if (!d || !d.tasks.length) return;
      let lo = Infinity, hi = -Infinity;
      for (const t of d.tasks) {
        lo = Math.min(lo, t[2]);
        hi = Math.max(hi, t[3] === null ? d.now : t[3]);
      }
      const pad = Math.max((hi - lo) * 0.02, MIN_SPAN);
      this.t0 = lo - pad;
      this.t1 = hi + pad;
      this.stopLive();
      this.draw();
    }

    async poll() {
      const q = new URLSearchParams({ limit: "2000" });
      const first = this.data === null;
      if (!first && this.live.checked) {
        q.set("start", String(this.data.now - this.span));
      } else if (!first) {
        q.set("start", String(this.t0));
        q.set("end", String(this.t1));
      }
      const resp = await fetch(`/api/timeline?${q}`, { credentials: "same-origin", cache: "no-store" });
      if (resp.status === 401) { window.location.assign("/login"); return; }
      if (!resp.ok) throw new Error(`timeline: HTTP ${resp.status}`);
      const d = await resp.json();
      this.data = d;
      if (this.origin === null && d.tasks.length) {
        this.origin = Math.min(...d.tasks.map((t) => t[2])); // 0 on the axis: the first task seen
      }
      if (first) {
        let lo = d.now - 5;
        for (const t of d.tasks) lo = Math.min(lo, t[2]);
        this.span = Math.max(d.now - lo, 2) * 1.05;
      }
      if (this.live.checked) {
        this.t1 = d.now + this.span * 0.02;
        this.t0 = this.t1 - this.span;
      }
      this.info.textContent = `${d.tasks.length} tasks, ${d.flows.length} dependencies in view` +
        (d.truncated ? " (the newest only: zoom in for the rest)" : "");
      this.draw();
    }

    lanesHeight() { return this.data ? this.data.lanes.length * LANE_H : 0; }

    draw() {
      const c = this.canvas;
      const d = this.data;
      const dpr = window.devicePixelRatio || 1;
      const width = c.parentElement.clientWidth || 800;
      const height = AXIS_H + Math.max(this.lanesHeight(), LANE_H) + 4;
      c.style.width = `${width}px`;
      c.style.height = `${height}px`;
      c.width = Math.round(width * dpr);
      c.height = Math.round(height * dpr);
      const g = this.ctx;
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, width, height);
      g.font = "12px system-ui, sans-serif";
      g.textBaseline = "middle";
      this.drawn = [];
      let bars = 0, arrows = 0;
      if (!d) { this.publish(0, 0); return; }
      const laneOf = new Map(d.lanes.map((l, i) => [l.pid, i]));
      // Lanes and their labels.
      d.lanes.forEach((l, i) => {
        const y = AXIS_H + i * LANE_H;
        g.fillStyle = i % 2 ? "#f6f7f9" : "#ffffff";
        g.fillRect(0, y, width, LANE_H);
        g.fillStyle = l.alive ? "#333" : "#999";
        g.fillText(l.label, 6, y + LANE_H / 2, LABEL_W - 12);
      });
      // The time axis.
      const step = niceStep(this.t1 - this.t0, this.plotWidth());
      const origin = this.origin === null ? this.t0 : this.origin;
      g.strokeStyle = "#e2e5ea";
      g.fillStyle = "#555";
      for (let t = Math.ceil((this.t0 - origin) / step) * step + origin; t <= this.t1; t += step) {
        const x = this.xAt(t);
        g.beginPath(); g.moveTo(x, AXIS_H - 6); g.lineTo(x, height); g.stroke();
        g.fillText(label(t - origin, step), x + 3, AXIS_H / 2);
      }
      // Bars, clipped to the plot.
      g.save();
      g.beginPath(); g.rect(LABEL_W, 0, width - LABEL_W, height); g.clip();
      const pos = new Array(d.tasks.length);
      d.tasks.forEach((t, i) => {
        const lane = laneOf.get(t[4]);
        if (lane === undefined) return;
        const end = t[3] === null ? d.now : t[3];
        const x0 = this.xAt(t[2]);
        const x1 = Math.max(this.xAt(end), x0 + 1);
        const y = AXIS_H + lane * LANE_H + (LANE_H - BAR_H) / 2;
        pos[i] = { x0, x1, y: y + BAR_H / 2 };
        if (x1 < LABEL_W || x0 > width) return;
        const failed = t[5] === "FAILED";
        const running = t[3] === null;
        g.fillStyle = failed ? "#d64545" : `hsl(${hue(t[8] || t[1])}, 55%, ${running ? 72 : 55}%)`;
        g.fillRect(x0, y, x1 - x0, BAR_H);
        if (running) { g.strokeStyle = "#2b6cb0"; g.setLineDash([3, 2]); g.strokeRect(x0, y, x1 - x0, BAR_H); g.setLineDash([]); }
        if (x1 - x0 > 40) {
          g.fillStyle = "#fff";
          g.fillText(t[1], Math.max(x0, LABEL_W) + 3, y + BAR_H / 2, x1 - Math.max(x0, LABEL_W) - 6);
        }
        this.drawn.push({ i, x0, x1, y });
        bars++;
      });
      // Dependency arrows: producer's end -> consumer's start.
      g.strokeStyle = "rgba(40, 40, 40, 0.55)";
      g.fillStyle = "rgba(40, 40, 40, 0.7)";
      g.lineWidth = 1;
      for (const [src, dst] of d.flows) {
        const a = pos[src], b = pos[dst];
        if (!a || !b) continue;
        if (Math.max(a.x1, b.x0) < LABEL_W || Math.min(a.x1, b.x0) > width) continue;
        const mx = (a.x1 + b.x0) / 2;
        g.beginPath();
        g.moveTo(a.x1, a.y);
        g.bezierCurveTo(mx, a.y, mx, b.y, b.x0, b.y);
        g.stroke();
        const ang = Math.atan2(b.y - a.y, b.x0 - mx) || 0;
        g.beginPath();
        g.moveTo(b.x0, b.y);
        g.lineTo(b.x0 - 6 * Math.cos(ang - 0.45), b.y - 6 * Math.sin(ang - 0.45));
        g.lineTo(b.x0 - 6 * Math.cos(ang + 0.45), b.y - 6 * Math.sin(ang + 0.45));
        g.closePath();
        g.fill();
        arrows++;
      }
      g.restore();
      this.publish(bars, arrows);
    }

    publish(bars, arrows) {
      this.canvas.dataset.bars = String(bars);
      this.canvas.dataset.arrows = String(arrows);
      this.canvas.dataset.tasks = String(this.data ? this.data.tasks.length : 0);
      window.rayliteTimeline = { bars, arrows, tasks: this.data ? this.data.tasks.length : 0, t0: this.t0, t1: this.t1 };
    }

    hover(x, y, pageX, pageY) {
      const d = this.data;
      const hit = this.drawn.find((b) => x >= b.x0 - 1 && x <= b.x1 + 1 && y >= b.y && y <= b.y + BAR_H);
      if (!d || !hit) { this.tip.hidden = true; return; }
      const t = d.tasks[hit.i];
      const end = t[3] === null ? d.now : t[3];
      const lines = [
        `${t[1]}${t[8] && t[8] !== t[1] ? ` (${t[8]})` : ""}`,
        `${t[5]}${t[7] ? `: ${t[7]}` : ""}`,
        `${((end - t[2]) * 1000).toFixed(2)} ms on worker ${t[4]}`,
        `task ${t[0]}`,
      ];
      this.tip.textContent = lines.join("\n");
      this.tip.style.left = `${pageX + 12}px`;
      this.tip.style.top = `${pageY + 12}px`;
      this.tip.hidden = false;
    }
  }

  window.RayliteTimeline = RayliteTimeline;
})();
