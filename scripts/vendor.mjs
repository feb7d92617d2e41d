// Copy the built files of the pinned browser libraries (package.json) into static/vendor/.
// Run `npm ci && npm run vendor` after changing a version; commit static/vendor/.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const files = {
  "tabulator-tables": [
    ["dist/js/tabulator_esm.min.mjs", "tabulator/tabulator_esm.min.js"],
    ["dist/css/tabulator.min.css", "tabulator/tabulator.min.css"],
    ["LICENSE", "tabulator/LICENSE"],
  ],
  // QR codes of private keys (the MIT licence is in the file's header) and reading them back.
  "qrcode-generator": [["dist/qrcode.mjs", "qrcode-generator/qrcode.js"]],
  jsqr: [
    ["dist/jsQR.js", "jsqr/jsQR.js"],
    ["LICENSE", "jsqr/LICENSE"],
  ],
  // The slide viewer (a classic script: it defines window.OpenSeadragon), with its button images.
  openseadragon: [
    ["build/openseadragon/openseadragon.min.js", "openseadragon/openseadragon.min.js"],
    ["LICENSE.txt", "openseadragon/LICENSE.txt"],
    ...readdirSync(join(root, "node_modules", "openseadragon", "build", "openseadragon", "images")).map(
      (name) => [`build/openseadragon/images/${name}`, `openseadragon/images/${name}`],
    ),
  ],
};
const versions = {};
for (const [pkg, list] of Object.entries(files)) {
  const source = join(root, "node_modules", pkg);
  versions[pkg] = JSON.parse(readFileSync(join(source, "package.json"))).version;
  for (const [from, to] of list) {
    const target = join(root, "static", "vendor", to);
    mkdirSync(dirname(target), { recursive: true });
    // Source maps are not shipped: drop the comments that point to them (Django's manifest
    // storage would otherwise require the .map files when collecting static files).
    let content = readFileSync(join(source, from));
    if (/\.(js|css)$/.test(to)) {
      content = content.toString().replace(/\n?\/[/*]# sourceMappingURL=\S+( \*\/)?\s*$/, "\n");
    }
    writeFileSync(target, content);
  }
}
writeFileSync(join(root, "static", "vendor", "VERSIONS.json"), JSON.stringify(versions, null, 2) + "\n");
console.log("static/vendor:", versions);
