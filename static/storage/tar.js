// Folders become one TAR archive (POSIX pax format) before they are uploaded, as the CLI does.
//
// The archive is never built in memory: it is a Blob made of 512-byte headers and the dropped
// files themselves, so the browser reads each file only when the upload slices that part of the
// archive. Entries are sorted by path and carry no owner, so the same folder gives the same
// bytes again and an interrupted folder upload resumes like a file's. Python's tarfile, GNU tar,
// bsdtar and 7-Zip read the result.

const BLOCK = 512;
const RECORD = 20 * BLOCK; // archives are padded to whole records, as tar programs write them
const USTAR_MAX_SIZE = 8 ** 11 - 1; // what 11 octal digits hold
const encoder = new TextEncoder();

function octal(value, width) {
  // `width` bytes: digits, then a NUL
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function put(block, offset, width, text) {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  block.set(bytes.subarray(0, width), offset);
}

function header({ name, size, mtime, type, mode }) {
  const block = new Uint8Array(BLOCK);
  put(block, 0, 100, name);
  put(block, 100, 8, octal(mode, 8));
  put(block, 108, 8, octal(0, 8)); // uid
  put(block, 116, 8, octal(0, 8)); // gid
  put(block, 124, 12, octal(size, 12));
  put(block, 136, 12, octal(mtime, 12));
  put(block, 148, 8, "        "); // the checksum counts itself as spaces
  put(block, 156, 1, type);
  put(block, 257, 6, "ustar\0");
  put(block, 263, 2, "00");
  let sum = 0;
  for (const byte of block) sum += byte;
  put(block, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return block;
}

function paxRecord(key, value) {
  // "<length> <key>=<value>\n", the length counting its own digits
  const body = encoder.encode(` ${key}=${value}\n`).length;
  let length = body + 1;
  while (String(length).length + body !== length) length = String(length).length + body;
  return `${length} ${key}=${value}\n`;
}

function padding(size) {
  const rest = size % BLOCK;
  return rest ? new Uint8Array(BLOCK - rest) : null;
}

// The parts of one entry: a pax header first where the path is long or not ASCII, or the file
// too large for the plain header.
function entryParts(path, { size = 0, mtime, type, mode }) {
  const parts = [];
  const bytes = encoder.encode(path);
  const plain = bytes.length <= 100 && /^[\x20-\x7e]*$/.test(path);
  const records = [];
  if (!plain) records.push(paxRecord("path", path));
  if (size > USTAR_MAX_SIZE) records.push(paxRecord("size", String(size)));
  if (records.length) {
    const data = encoder.encode(records.join(""));
    const shortName = `PaxHeaders/${path.replace(/[^\x20-\x7e]/g, "_")}`.slice(0, 99);
    parts.push(header({ name: shortName, size: data.length, mtime, type: "x", mode: 0o644 }), data);
    const pad = padding(data.length);
    if (pad) parts.push(pad);
  }
  const name = plain ? path : path.replace(/[^\x20-\x7e]/g, "_").slice(-100);
  parts.push(header({ name, size: size > USTAR_MAX_SIZE ? 0 : size, mtime, type, mode }));
  return parts;
}

// entries: [{ path: "folder/a/b.txt", file }] and [{ path: "folder/a", directory: true }];
// directories implied by file paths are added. Returns a File named "<name>.tar".
export function folderArchive(name, entries) {
  const files = new Map();
  const directories = new Set();
  for (const entry of entries) {
    const path = entry.path.replace(/^\/+|\/+$/g, "");
    if (!path) continue;
    if (entry.directory) directories.add(path);
    else files.set(path, entry.file);
    const steps = path.split("/");
    for (let i = 1; i < steps.length; i++) directories.add(steps.slice(0, i).join("/"));
  }
  let newest = 0;
  for (const file of files.values()) newest = Math.max(newest, Math.floor(file.lastModified / 1000) || 0);
  const all = [
    ...[...directories].map((path) => ({ path: `${path}/`, directory: true })),
    ...[...files].map(([path, file]) => ({ path, file })),
  ].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const parts = [];
  let size = 0;
  for (const entry of all) {
    const meta = entry.directory
      ? { type: "5", mode: 0o755, mtime: newest }
      : { type: "0", mode: 0o644, size: entry.file.size, mtime: Math.floor(entry.file.lastModified / 1000) || 0 };
    for (const part of entryParts(entry.path, meta)) {
      parts.push(part);
      size += part.length;
    }
    if (!entry.directory) {
      parts.push(entry.file);
      size += entry.file.size;
      const pad = padding(entry.file.size);
      if (pad) {
        parts.push(pad);
        size += pad.length;
      }
    }
  }
  size += 2 * BLOCK; // the end: two empty blocks, then up to a whole record
  const end = 2 * BLOCK + (RECORD - (size % RECORD)) % RECORD;
  parts.push(new Uint8Array(end));
  return new File(parts, `${name}.tar`, { type: "application/x-tar", lastModified: newest * 1000 });
}

function readAll(reader) {
  // readEntries gives up to 100 entries a call, until it gives none
  return new Promise((resolve, reject) => {
    const found = [];
    const next = () => reader.readEntries((batch) => {
      if (!batch.length) resolve(found);
      else {
        found.push(...batch);
        next();
      }
    }, reject);
    next();
  });
}

function fileOf(entry) {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

// Everything in a dropped folder (a FileSystemDirectoryEntry), with paths starting at its name.
export async function entriesOfDirectory(directory) {
  const entries = [{ path: directory.name, directory: true }];
  const walk = async (folder, prefix) => {
    for (const child of await readAll(folder.createReader())) {
      const path = `${prefix}/${child.name}`;
      if (child.isDirectory) {
        entries.push({ path, directory: true });
        await walk(child, path);
      } else if (child.isFile) {
        entries.push({ path, file: await fileOf(child) });
      }
    }
  };
  await walk(directory, directory.name);
  return entries;
}

// The files of a drop: plain files as they are, each folder as one archive. Reads the drop's
// entries at once (they are gone after the event), the folders' contents afterwards.
export async function droppedItems(dataTransfer) {
  const items = dataTransfer.items ? [...dataTransfer.items].filter((item) => item.kind === "file") : [];
  if (!items.length || !items[0].webkitGetAsEntry) return [...dataTransfer.files];
  const found = items.map((item) => [item.webkitGetAsEntry(), item.getAsFile()]);
  const result = [];
  for (const [entry, file] of found) {
    if (entry && entry.isDirectory) {
      result.push(folderArchive(entry.name, await entriesOfDirectory(entry)));
    } else if (file) {
      result.push(file);
    }
  }
  return result;
}

// The files of an <input type="file" webkitdirectory>: one archive per chosen folder.
export function chosenFolder(fileList) {
  const byFolder = new Map();
  for (const file of fileList) {
    const path = file.webkitRelativePath || file.name;
    const top = path.split("/")[0];
    if (!byFolder.has(top)) byFolder.set(top, []);
    byFolder.get(top).push({ path, file });
  }
  return [...byFolder].map(([name, entries]) => folderArchive(name, entries));
}
