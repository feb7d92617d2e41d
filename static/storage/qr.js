// QR codes of private keys: drawing one (qrcode-generator) and reading one from an image or the
// camera (jsQR). The compact key text ("RDPK1:" + base32) uses only characters of the QR code's
// alphanumeric mode, so a 4096-bit key fits one code of version 24 at error correction L.

import qrcode from "../vendor/qrcode-generator/qrcode.js";
import "../vendor/jsqr/jsQR.js"; // sets self.jsQR

export const ERROR_CORRECTION = "L";

/** A QR code of `text` on a canvas: {canvas, version, modules}. */
export function drawQr(text, { cellSize = 4, margin = 4, level = ERROR_CORRECTION } = {}) {
  const code = qrcode(0, level);
  code.addData(text, /^[0-9A-Z $%*+\-./:]*$/.test(text) ? "Alphanumeric" : "Byte");
  code.make();
  const modules = code.getModuleCount();
  const size = (modules + 2 * margin) * cellSize;
  const canvas = Object.assign(document.createElement("canvas"), { width: size, height: size });
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, size, size);
  context.fillStyle = "#000";
  for (let row = 0; row < modules; row++) {
    for (let col = 0; col < modules; col++) {
      if (code.isDark(row, col)) context.fillRect((col + margin) * cellSize, (row + margin) * cellSize, cellSize, cellSize);
    }
  }
  return { canvas, version: (modules - 17) / 4, modules };
}

/** The text of a QR code in an ImageData, or null. */
export function readQr(imageData) {
  const found = self.jsQR(imageData.data, imageData.width, imageData.height, { inversionAttempts: "attemptBoth" });
  return found ? found.data : null;
}

/** Read a QR code from an image file (a photo or scan of the printed key). */
export async function readQrFromFile(file) {
  const bitmap = await createImageBitmap(file);
  // Large photos are scaled down: jsQR is faster and as reliable at about 1,500 pixels.
  const scale = Math.min(1, 1600 / Math.max(bitmap.width, bitmap.height));
  const width = Math.round(bitmap.width * scale), height = Math.round(bitmap.height * scale);
  const canvas = Object.assign(document.createElement("canvas"), { width, height });
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0, width, height);
  return readQr(context.getImageData(0, 0, width, height));
}

/** Read QR codes from the camera into `video` until `accept(text)` returns true or `stop()`. */
export async function scanCamera(video, accept) {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { facingMode: "environment", width: { ideal: 1920 }, height: { ideal: 1080 } }, audio: false,
  });
  video.srcObject = stream;
  await video.play();
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  let running = true;
  const stop = () => {
    running = false;
    stream.getTracks().forEach((track) => track.stop());
    video.srcObject = null;
  };
  const done = new Promise((resolve, reject) => {
    const tick = async () => {
      if (!running) return resolve(null);
      if (video.videoWidth) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        context.drawImage(video, 0, 0);
        const text = readQr(context.getImageData(0, 0, canvas.width, canvas.height));
        try {
          if (text && (await accept(text))) {
            stop();
            return resolve(text);
          }
        } catch (error) {
          stop();
          return reject(error);
        }
      }
      setTimeout(tick, 150);
    };
    tick();
  });
  return { stop, done };
}
