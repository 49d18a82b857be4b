// The page of `streamgen serve`: the list of streams, a player, steering and a start button.
// The token is kept in sessionStorage and sent only as an Authorization header, never in a URL.
// The live view comes over a WebSocket as fragmented MP4 and plays through Media Source Extensions.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN = "streamgen-token";
let watching = null;

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

async function attempt(what) {
  try {
    say(await what());
  } catch (err) {
    say(err.message, true);
  }
}

// --- the live view ---------------------------------------------------------------------------------
class Player {
  constructor(video) {
    this.video = video;
    this.ws = null;
    this.stats = { latencies: [], fragments: 0 };
    window.streamgenStats = this.stats; // read by tests and benchmarks
    const onFrame = (now, meta) => {
      this.shown(meta);
      video.requestVideoFrameCallback(onFrame);
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
  }

  watch(id) {
    this.close();
    this.made = new Map();
    this.queue = [];
    this.buffer = null;
    this.fps = 8;
    this.source = new MediaSource();
    this.video.src = URL.createObjectURL(this.source);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/streams/${encodeURIComponent(id)}/video`);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => this.message(event.data);
    ws.onclose = () => { if (this.ws === ws) $("video-state").textContent = "live view closed"; };
    this.ws = ws;
  }

  close() {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
  }

  message(data) {
    const length = new DataView(data).getUint32(0);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, length)));
    const payload = data.slice(4 + length);
    if (head.init) {
      this.fps = head.fps;
      this.open(head.codec).then(() => this.append(payload));
    } else if (head.end) {
      $("video-state").textContent = `stream ${head.state || "ended"}${head.error ? ": " + head.error : ""}`;
    } else {
      this.made.set(head.i, head.made);
      if (this.made.size > 1000) this.made.delete(this.made.keys().next().value);
      this.stats.fragments += 1;
      this.append(payload);
    }
  }

  open(codec) {
    return new Promise((resolve) => {
      const ready = () => {
        const type = `video/mp4; codecs="${codec}"`;
        if (!MediaSource.isTypeSupported(type)) {
          $("video-state").textContent = `this browser cannot play ${type}`;
          return;
        }
        this.buffer = this.source.addSourceBuffer(type);
        this.buffer.mode = "segments";
        this.buffer.addEventListener("updateend", () => this.pump());
        resolve();
      };
      if (this.source.readyState === "open") ready();
      else this.source.addEventListener("sourceopen", ready, { once: true });
    });
  }

  append(bytes) {
    this.queue.push(bytes);
    this.pump();
  }

  pump() {
    const buffer = this.buffer;
    if (!buffer || buffer.updating) return;
    const ranges = this.video.buffered;
    if (ranges.length) {
      const start = ranges.start(0), end = ranges.end(ranges.length - 1);
      // stay at the live edge: a late joiner starts at its first keyframe, a stall catches up
      if (this.video.currentTime < start || end - this.video.currentTime > 1.0) {
        this.video.currentTime = Math.max(start, end - 1 / this.fps);
      }
      if (this.video.currentTime - start > 30) {
        buffer.remove(start, this.video.currentTime - 10); // memory stays flat in a long stream
        return;
      }
    }
    if (this.queue.length) buffer.appendBuffer(this.queue.shift());
    if (this.video.paused) this.video.play().catch(() => {});
  }

  shown(meta) {
    const made = this.made && this.made.get(Math.round(meta.mediaTime * this.fps));
    if (made === undefined) return;
    const latency = performance.timeOrigin + meta.expectedDisplayTime - made;
    const list = this.stats.latencies;
    list.push(latency);
    if (list.length > 2000) list.shift();
    const recent = list.slice(-200).sort((a, b) => a - b);
    const at = (q) => recent[Math.min(recent.length - 1, Math.floor(q * recent.length))];
    $("video-state").textContent =
      `generation to display: median ${at(0.5).toFixed(0)} ms, 95th percentile ${at(0.95).toFixed(0)} ms`;
  }
}

// --- streams ---------------------------------------------------------------------------------------
function row(stream) {
  const tr = document.createElement("tr");
  tr.dataset.id = stream.id;
  if (stream.id === watching) tr.className = "selected";
  const cells = [stream.id, stream.prompt || "", stream.state, stream.frames, stream.frames_per_second.toFixed(1),
                 stream.lag.toFixed(2), stream.viewers];
  for (const value of cells) {
    const td = document.createElement("td");
    td.textContent = value;
    tr.appendChild(td);
  }
  const td = document.createElement("td");
  const stop = document.createElement("button");
  stop.textContent = "Remove";
  stop.onclick = (event) => {
    event.stopPropagation();
    attempt(async () => { await call("DELETE", `/streams/${stream.id}`); refresh(); return `removed ${stream.id}`; });
  };
  td.appendChild(stop);
  tr.appendChild(td);
  tr.onclick = () => watch(stream.id);
  return tr;
}

async function refresh() {
  let data;
  try {
    data = await call("GET", "/streams");
  } catch (err) {
    return;
  }
  $("streams").tBodies[0].replaceChildren(...data.streams.map(row));
  const current = data.streams.find((s) => s.id === watching);
  if (current) $("status").textContent = JSON.stringify(current, null, 2);
  if (!watching && data.streams.length) watch(data.streams[0].id);
}

function watch(id) {
  watching = id;
  $("watching").textContent = id;
  player.watch(id);
  refresh();
}

function numbers(fields) {
  const out = {};
  for (const name of fields) {
    const value = $(name).value.trim();
    if (value !== "") out[name] = Number(value);
  }
  return out;
}

const player = new Player($("player"));

$("token-form").onsubmit = (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN, $("token").value.trim());
  $("token").value = "";
  $("token-state").textContent = "token set for this tab";
};
if (sessionStorage.getItem(TOKEN)) $("token-state").textContent = "token set for this tab";

$("start-form").onsubmit = (event) => {
  event.preventDefault();
  const [width, height] = $("start-size").value.split("x").map(Number);
  const body = { task: "t2v", fps: Number($("start-fps").value),
                 request: { prompt: $("start-prompt").value, width, height, frames: null,
                            seed: Number($("start-seed").value) } };
  const output = $("start-output").value.trim();
  if (output) body.output = output;
  attempt(async () => { const made = await call("POST", "/streams", body); watch(made.id); return `started ${made.id}`; });
};

$("steer-form").onsubmit = (event) => {
  event.preventDefault();
  if (!watching) return say("pick a stream first", true);
  attempt(async () => (await call("PATCH", `/streams/${watching}`, { prompt: $("prompt").value })).ok);
};

$("sampling-form").onsubmit = (event) => {
  event.preventDefault();
  if (!watching) return say("pick a stream first", true);
  const sampling = numbers(["temperature", "top_k", "guidance"]);
  attempt(async () => (await call("PATCH", `/streams/${watching}`, { sampling })).ok);
};

refresh();
setInterval(refresh, 1000);
