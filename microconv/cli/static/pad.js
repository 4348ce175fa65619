"use strict";
// The drawing pad: strokes from pointer events (mouse, finger or pen) on a canvas; each time
// the pen lifts, the canvas goes to the server as a PNG and the answer is drawn. The photo tab
// sends a photo and draws the letters found on it. No libraries: the DOM and fetch only.

const $ = (id) => document.getElementById(id);
const PEN = 9;                  // pen width in canvas pixels (the canvas is 256 wide); thinner
                                // than the data set's strokes, which the server widens, never thins
let maxUploadBytes = Infinity;  // from /api/info, as are the names of the 26 classes
let letterNames = [];

// --- talking to the server ------------------------------------------------------------------

async function post(url, body, type) {
  // The answer as an object; on any failure {error: "one line"}.
  try {
    const response = await fetch(url, {method: "POST", headers: {"Content-Type": type}, body});
    const text = await response.text();
    let data;
    try { data = JSON.parse(text); } catch { data = {error: text || response.statusText}; }
    if (!response.ok) return {error: data.error || `${response.status} ${response.statusText}`};
    return data;
  } catch (err) {
    return {error: `the server cannot be reached (${err.message})`};
  }
}

async function showInfo() {
  try {
    const info = await (await fetch("api/info")).json();
    maxUploadBytes = info.max_upload_bytes;
    letterNames = info.letters;
    $("model").textContent = `${info.checkpoint} · ${info.backend}`;
  } catch (err) {
    $("model").textContent = "the server cannot be reached";
  }
}

// --- tabs -------------------------------------------------------------------------------------

function showTab(chosen) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab === chosen;
    tab.setAttribute("aria-selected", String(selected));
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
}
for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => showTab(tab));
}

// --- the pad ----------------------------------------------------------------------------------

const pad = $("pad");
const ink = pad.getContext("2d");
let strokes = 0;        // strokes since the last clear
let drawing = 0;        // counts clears, so that an answer about an erased drawing is dropped
let pen = null;         // {id, at: [x, y]} while a stroke is being drawn

function clearPad() {
  ink.fillStyle = "#fff";          // opaque white: the server reads dark ink on light paper
  ink.fillRect(0, 0, pad.width, pad.height);
  strokes = 0;
  drawing += 1;
  showLetter(null, 0);
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

function line(from, to) {
  ink.strokeStyle = "#000";
  ink.lineWidth = PEN;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(from[0], from[1]);
  ink.lineTo(to[0], to[1]);
  ink.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  if (pen !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  const at = padPoint(event);
  pen = {id: event.pointerId, at};
  line(at, at);
});

pad.addEventListener("pointermove", (event) => {
  if (pen === null || event.pointerId !== pen.id) return;
  // Coalesced events hold every position the pointer passed since the last frame.
  const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const each of coalesced.length ? coalesced : [event]) {
    const at = padPoint(each);
    line(pen.at, at);
    pen.at = at;
  }
});

function lift(event) {
  if (pen === null || event.pointerId !== pen.id) return;
  pen = null;
  strokes += 1;
  readPad();
}
pad.addEventListener("pointerup", lift);
pad.addEventListener("pointercancel", lift);
$("clear").addEventListener("click", clearPad);

// One request at a time: strokes that end while one is on its way are read together next.
let reading = false;
let readAgain = false;

async function readPad() {
  if (reading) { readAgain = true; return; }
  reading = true;
  do {
    readAgain = false;
    const mine = drawing;
    const covered = strokes;
    const picture = await new Promise((done) => pad.toBlob(done, "image/png"));
    const answer = await post("api/letter", picture, "image/png");
    if (mine === drawing) showLetter(answer, covered);
  } while (readAgain);
  reading = false;
}

// --- showing an answer ------------------------------------------------------------------------

function paint(canvas, rows) {
  // A 2-D array as grey pixels, scaled to its own range (black: lowest, white: highest).
  const h = rows.length;
  const w = rows[0].length;
  const values = rows.flat();
  const low = Math.min(...values);
  const span = Math.max(...values) - low;
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  const image = context.createImageData(w, h);
  values.forEach((v, i) => {
    const grey = span > 0 ? Math.round(255 * (v - low) / span) : 0;
    image.data.set([grey, grey, grey, 255], 4 * i);
  });
  context.putImageData(image, 0, 0);
  canvas.title = `from ${low.toFixed(3)} (black) to ${(low + span).toFixed(3)} (white)`;
}

function showLetter(answer, covered) {
  const shown = $("answer");
  shown.dataset.strokes = String(covered);
  $("status").classList.toggle("error", Boolean(answer && answer.error));
  if (!answer || answer.error) {
    shown.textContent = "?";
    shown.dataset.letter = "";
    $("top3").replaceChildren();
    $("blocks").replaceChildren();
    $("scores").replaceChildren();
    $("input").getContext("2d").clearRect(0, 0, 28, 28);
    $("status").textContent = answer ? answer.error
      : "Draw with a mouse, a finger or a pen; the network reads each time you lift it.";
    return;
  }
  shown.textContent = answer.letter;
  shown.dataset.letter = answer.letter;
  $("status").textContent = "";
  $("top3").replaceChildren(...answer.top3.map(([letter, p]) => {
    const row = document.createElement("li");
    row.dataset.letter = letter;
    row.innerHTML = `<b>${letter}</b><span class="track"><span class="bar"></span></span>` +
                    `<span class="share">${(100 * p).toFixed(1)} %</span>`;
    row.querySelector(".bar").style.width = `${(100 * p).toFixed(1)}%`;
    return row;
  }));
  paint($("input"), answer.input);
  showBlocks(answer.blocks);
  showScores(answer.scores, answer.letter);
}

function showBlocks(blocks) {
  $("blocks").replaceChildren(...blocks.map((maps, i) => {
    const block = document.createElement("div");
    const title = document.createElement("h3");
    const size = maps[0].length;
    title.textContent = `Block ${i + 1}: ${maps.length} maps of ${size}×${size}`;
    const tiles = document.createElement("div");
    tiles.className = "tiles";
    tiles.dataset.size = String(size);
    maps.forEach((map, channel) => {
      const tile = document.createElement("canvas");
      paint(tile, map);
      tile.title = `channel ${channel}: ${tile.title}`;
      tiles.append(tile);
    });
    block.append(title, tiles);
    return block;
  }));
}

function showScores(scores, best) {
  const largest = Math.max(...scores.map(Math.abs)) || 1;
  $("scores").replaceChildren(...scores.map((score, i) => {
    const column = document.createElement("div");
    const name = letterNames[i] || String(i);
    column.className = name === best ? "score best" : "score";
    column.title = `${name}: ${score.toFixed(3)}`;
    const height = `${(100 * Math.abs(score) / largest).toFixed(1)}%`;
    column.innerHTML = `<span class="up"></span><span class="down"></span><b>${name}</b>`;
    const bar = document.createElement("i");
    bar.style.height = height;
    column.querySelector(score >= 0 ? ".up" : ".down").append(bar);
    return column;
  }));
}

// --- the photo tab ----------------------------------------------------------------------------

$("photo-file").addEventListener("change", async () => {
  const file = $("photo-file").files[0];
  if (!file) return;
  const text = $("photo-text");
  const status = $("photo-status");
  text.textContent = "";
  text.dataset.state = "reading";
  status.classList.remove("error");
  if (file.size > maxUploadBytes) {
    return showPhotoError(`the photo is ${(file.size / 2 ** 20).toFixed(1)} MiB; the server ` +
                          `takes at most ${(maxUploadBytes / 2 ** 20).toFixed(0)} MiB`);
  }
  status.textContent = "reading…";
  const result = await post("api/photo", file, file.type || "application/octet-stream");
  if (result.error) return showPhotoError(result.error);
  const picture = new Image();
  picture.src = URL.createObjectURL(file);
  try {
    await picture.decode();
  } catch {
    return showPhotoError("the browser cannot show this picture");
  } finally {
    URL.revokeObjectURL(picture.src);
  }
  drawPhoto(picture, result);
  text.textContent = result.text || "(no letters found)";
  text.dataset.state = "done";
  text.dataset.letters = String(result.letters.length);
  const lines = result.lines.length === 1 ? "one line" : `${result.lines.length} lines`;
  status.textContent = result.letters.length
    ? `${result.letters.length} letters in ${lines}, in reading order` : "";
});

function showPhotoError(message) {
  $("photo-text").dataset.state = "error";
  $("photo-status").textContent = message;
  $("photo-status").classList.add("error");
}

function drawPhoto(picture, result) {
  // Boxes come in the pixels of the picture the server read (upright, maybe scaled down).
  const view = $("photo-view");
  view.width = result.width;
  view.height = result.height;
  const context = view.getContext("2d");
  context.drawImage(picture, 0, 0, result.width, result.height);
  const sides = result.letters.map((x) => x.box[2] - x.box[0]).sort((a, b) => a - b);
  const size = sides.length ? sides[Math.floor(sides.length / 2)] : 0;
  const fontSize = Math.max(12, Math.round(size * 0.5));
  const space = size * 0.08;
  context.lineWidth = Math.max(2, size / 40);
  context.font = `bold ${fontSize}px system-ui, sans-serif`;
  context.textAlign = "center";
  for (const found of result.letters) {
    const [left, top, right, bottom] = found.box;
    context.strokeStyle = "#00a000";
    context.strokeRect(left, top, right - left, bottom - top);
    context.fillStyle = "#c00000";
    // the letter read goes below its box, or above it where the photo ends too soon
    const below = bottom + space + fontSize <= result.height;
    context.textBaseline = below ? "top" : "bottom";
    context.fillText(found.letter, (left + right) / 2,
                     below ? bottom + space : Math.max(fontSize, top - space));
  }
}

clearPad();
showInfo();
