// The browser's half of the storage cryptography (storage/crypto.py is the server's half).
//
// - User keys: RSA-4096, RSA-OAEP with SHA-256. The fingerprint is the SHA-256 of the public
//   key's DER SubjectPublicKeyInfo, hex (as `crypto.public_key_fingerprint`).
// - The compact private-key text "RDPK1:" + unpadded base32 of: version byte 1; e, p, q, d each as
//   a 2-byte big-endian length and the number (p, q padded to half, d to the whole modulus
//   length); the first 4 bytes of SHA-256 of all that. n, dp, dq and qi are recomputed on import.
// - Chunks: AES-256-GCM, 12-byte nonce, 16-byte tag, associated data = `chunkAad(dataset, index)`.
// - The dataset hash: SHA-256 over the raw 32-byte SHA-256 digests of the plaintext chunks.

const subtle = globalThis.crypto.subtle;
const OAEP = { name: "RSA-OAEP", hash: "SHA-256" };
export const KEY_BITS = 4096;
export const COMPACT_PREFIX = "RDPK1:";
const CHECKSUM_BYTES = 4;

export class KeyError extends Error {}
/** The key file is protected by a password and none (or a wrong one) was given. */
export class KeyPasswordError extends KeyError {}

// --- bytes -----------------------------------------------------------------------------------------

export function toHex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

export function toBase64(bytes) {
  const view = new Uint8Array(bytes);
  let text = "";
  for (let i = 0; i < view.length; i += 0x8000) text += String.fromCharCode(...view.subarray(i, i + 0x8000));
  return btoa(text);
}

export function fromBase64(text) {
  const normal = text.replace(/-/g, "+").replace(/_/g, "/").replace(/\s+/g, "");
  const binary = atob(normal + "=".repeat((4 - (normal.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

const toBase64Url = (bytes) => toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function bigFromBytes(bytes) {
  return bytes.length ? BigInt("0x" + toHex(bytes)) : 0n;
}

function bytesFromBig(value, width = 0) {
  let hex = value.toString(16);
  if (hex.length % 2) hex = "0" + hex;
  const length = Math.max(width, hex.length / 2);
  const out = new Uint8Array(length);
  for (let i = 0; i < hex.length / 2; i++) out[length - hex.length / 2 + i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

// --- base32 (RFC 4648, unpadded, upper case) --------------------------------------------------------

const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32Encode(bytes) {
  let bits = 0, value = 0, out = "";
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

function base32Decode(text) {
  const out = [];
  let bits = 0, value = 0;
  for (const char of text) {
    const index = B32.indexOf(char);
    if (index < 0) throw new KeyError(`The key text has a character that cannot be in it (“${char}”): mistyped or misread?`);
    value = ((value << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 255);
      bits -= 8;
    }
  }
  return Uint8Array.from(out);
}

// --- modular arithmetic -------------------------------------------------------------------------------

function mod(a, m) {
  const r = a % m;
  return r < 0n ? r + m : r;
}

function modInverse(a, m) {
  let [oldR, r] = [mod(a, m), m];
  let [oldS, s] = [1n, 0n];
  while (r !== 0n) {
    const q = oldR / r;
    [oldR, r] = [r, oldR - q * r];
    [oldS, s] = [s, oldS - q * s];
  }
  if (oldR !== 1n) throw new KeyError("The numbers do not form an RSA key (q has no inverse modulo p).");
  return mod(oldS, m);
}

// --- keys --------------------------------------------------------------------------------------------

/** A new RSA-4096 key pair for RSA-OAEP/SHA-256, extractable (so it can be saved and printed). */
export async function generateKeyPair() {
  return subtle.generateKey(
    { ...OAEP, modulusLength: KEY_BITS, publicExponent: new Uint8Array([1, 0, 1]) }, true, ["encrypt", "decrypt"]);
}

/** The public half of a private JWK, as a CryptoKey for encrypting. */
async function publicFromJwk(jwk) {
  return subtle.importKey("jwk", { kty: "RSA", n: jwk.n, e: jwk.e, alg: "RSA-OAEP-256", ext: true },
    OAEP, true, ["encrypt"]);
}

/** What the page needs of a private key: the CryptoKey, its JWK, public PEM and fingerprint. */
export async function describePrivateKey(privateKey) {
  const jwk = await subtle.exportKey("jwk", privateKey);
  const bits = fromBase64(jwk.n).length * 8;
  if (bits !== KEY_BITS) throw new KeyError(`This is a ${bits}-bit RSA key; the portal uses ${KEY_BITS}-bit keys.`);
  const publicKey = await publicFromJwk(jwk);
  const spki = new Uint8Array(await subtle.exportKey("spki", publicKey));
  return {
    privateKey,
    jwk,
    publicKey,
    fingerprint: toHex(await sha256(spki)),
    publicPem: pem("PUBLIC KEY", spki),
  };
}

function pem(label, der) {
  const body = toBase64(der).match(/.{1,64}/g).join("\n");
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

/** The private key as unencrypted PKCS#8 PEM (what `openssl` and the portal's CLI read). */
export async function privatePem(privateKey) {
  return pem("PRIVATE KEY", new Uint8Array(await subtle.exportKey("pkcs8", privateKey)));
}

async function importJwk(jwk) {
  const clean = { kty: "RSA", alg: "RSA-OAEP-256", ext: true, key_ops: ["decrypt"] };
  for (const name of ["n", "e", "d", "p", "q", "dp", "dq", "qi"]) if (jwk[name]) clean[name] = jwk[name];
  let key;
  try {
    key = await subtle.importKey("jwk", clean, OAEP, true, ["decrypt"]);
  } catch (error) {
    throw new KeyError("The browser could not use this key (it is damaged, or not an RSA private key).");
  }
  return checked(key);
}

/** Import succeeded: prove the halves belong together (wrap and unwrap a random value). */
async function checked(privateKey) {
  const described = await describePrivateKey(privateKey);
  const probe = crypto.getRandomValues(new Uint8Array(32));
  try {
    const back = new Uint8Array(await subtle.decrypt(OAEP, privateKey,
      await subtle.encrypt(OAEP, described.publicKey, probe)));
    if (toHex(back) !== toHex(probe)) throw new Error("mismatch");
  } catch (error) {
    throw new KeyError("The key's numbers do not fit together: it is damaged.");
  }
  return described;
}

/** The compact text of a private key (1,670 characters for RSA-4096), for a QR code. */
export async function compactText(privateKey) {
  const jwk = await subtle.exportKey("jwk", privateKey);
  const modulusBytes = fromBase64(jwk.n).length;
  const field = (b64, width) => {
    const raw = bytesFromBig(bigFromBytes(fromBase64(b64)), width);
    return concat(new Uint8Array([raw.length >> 8, raw.length & 255]), raw);
  };
  const body = concat(new Uint8Array([1]), field(jwk.e, 0), field(jwk.p, modulusBytes / 2),
    field(jwk.q, modulusBytes / 2), field(jwk.d, modulusBytes));
  const checksum = (await sha256(body)).subarray(0, CHECKSUM_BYTES);
  return COMPACT_PREFIX + base32Encode(concat(body, checksum));
}

/** Read a compact key text: check it, recompute n, dp, dq and qi, import it. */
export async function importCompactText(text) {
  const cleaned = text.replace(/\s+/g, "").toUpperCase();
  if (!cleaned.startsWith(COMPACT_PREFIX)) {
    const other = cleaned.match(/^RDPK(\w*):/);
    if (other) throw new KeyError(`This key text is of version ${other[1]}; this page reads version 1.`);
    throw new KeyError(`A key text starts with “${COMPACT_PREFIX}”.`);
  }
  const raw = base32Decode(cleaned.slice(COMPACT_PREFIX.length));
  if (raw.length < 1 + CHECKSUM_BYTES) throw new KeyError("The key text is too short.");
  const body = raw.subarray(0, raw.length - CHECKSUM_BYTES);
  const expected = (await sha256(body)).subarray(0, CHECKSUM_BYTES);
  if (toHex(expected) !== toHex(raw.subarray(raw.length - CHECKSUM_BYTES))) {
    throw new KeyError("The key text's checksum does not match: it was mistyped, misread or damaged.");
  }
  if (body[0] !== 1) throw new KeyError(`Unknown key version ${body[0]}; this page reads version 1.`);
  const values = [];
  let offset = 1;
  for (const name of ["e", "p", "q", "d"]) {
    if (offset + 2 > body.length) throw new KeyError(`The key text ends before its “${name}”.`);
    const length = (body[offset] << 8) | body[offset + 1];
    offset += 2;
    if (!length || offset + length > body.length) throw new KeyError(`The key text's “${name}” is cut short.`);
    values.push(bigFromBytes(body.subarray(offset, offset + length)));
    offset += length;
  }
  if (offset !== body.length) throw new KeyError("The key text has extra bytes at its end.");
  const [e, p, q, d] = values;
  if (p < 2n || q < 2n || p === q) throw new KeyError("The numbers do not form an RSA key.");
  const n = p * q;
  const b64 = (value) => toBase64Url(bytesFromBig(value));
  return importJwk({
    n: b64(n), e: b64(e), d: b64(d), p: b64(p), q: b64(q),
    dp: b64(d % (p - 1n)), dq: b64(d % (q - 1n)), qi: b64(modInverse(q, p)),
  });
}

// DER pieces to turn PKCS#1 (“BEGIN RSA PRIVATE KEY”) into PKCS#8, which Web Crypto reads.
function derLength(length) {
  if (length < 128) return new Uint8Array([length]);
  const bytes = bytesFromBig(BigInt(length));
  return concat(new Uint8Array([0x80 | bytes.length]), bytes);
}
const derTlv = (tag, content) => concat(new Uint8Array([tag]), derLength(content.length), content);
const RSA_ALGORITHM = new Uint8Array([0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00]);

// --- password-protected PKCS#8 (“ENCRYPTED PRIVATE KEY”, RFC 8018 PBES2) ------------------------

/** The DER element of `der` at `offset`: its tag and where its content starts and ends. */
function derElement(der, offset) {
  if (offset + 2 > der.length) throw new KeyError("The key file is cut short.");
  const tag = der[offset];
  let length = der[offset + 1];
  let start = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (!count || count > 4 || start + count > der.length) throw new KeyError("The key file is damaged.");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[start + i];
    start += count;
  }
  if (start + length > der.length) throw new KeyError("The key file is cut short.");
  return { tag, start, end: start + length };
}

/** The elements inside `element` (a SEQUENCE) of `der`. */
function derChildren(der, element) {
  const children = [];
  for (let offset = element.start; offset < element.end;) {
    const child = derElement(der, offset);
    children.push(child);
    offset = child.end;
  }
  return children;
}

function oidText(bytes) {
  const parts = [Math.floor(bytes[0] / 40), bytes[0] % 40];
  let value = 0;
  for (const byte of bytes.subarray(1)) {
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      parts.push(value);
      value = 0;
    }
  }
  return parts.join(".");
}

const PBES2 = "1.2.840.113549.1.5.13";
const PBKDF2 = "1.2.840.113549.1.5.12";
const PRFS = {
  "1.2.840.113549.2.7": "SHA-1",
  "1.2.840.113549.2.9": "SHA-256",
  "1.2.840.113549.2.10": "SHA-384",
  "1.2.840.113549.2.11": "SHA-512",
};
const CIPHERS = { "2.16.840.1.101.3.4.1.2": 128, "2.16.840.1.101.3.4.1.42": 256 };

/** Decrypt an EncryptedPrivateKeyInfo (PBES2: PBKDF2 with HMAC-SHA-1/256/384/512, AES-128/256-CBC),
 * as written by `openssl pkey -aes256`, `ssh-keygen -m pkcs8` with a passphrase and Python's
 * cryptography; returns the PKCS#8 DER inside. */
async function decryptPkcs8(der, password) {
  const unsupported = "This password-protected key file uses a kind of encryption the browser cannot open. " +
    "Convert it: openssl pkcs8 -topk8 -v2 aes-256-cbc -in yourkey.pem -out yourkey-aes.pem";
  let salt, iterations, hash, bits, iv, encrypted;
  const content = (element) => der.subarray(element.start, element.end);
  const oid = (element) => oidText(content(element));
  try {
    const [algorithm, data] = derChildren(der, derElement(der, 0));
    const [scheme, schemeParams] = derChildren(der, algorithm);
    if (oid(scheme) !== PBES2) throw new KeyError(unsupported);
    const [kdf, cipher] = derChildren(der, schemeParams);
    const [kdfOid, kdfParams] = derChildren(der, kdf);
    if (oid(kdfOid) !== PBKDF2) throw new KeyError(unsupported);
    const fields = derChildren(der, kdfParams);
    salt = content(fields[0]);
    iterations = Number(bigFromBytes(content(fields[1])));
    const prf = fields.slice(2).find((field) => field.tag === 0x30);
    hash = prf ? PRFS[oid(derChildren(der, prf)[0])] : "SHA-1";
    const [cipherOid, ivElement] = derChildren(der, cipher);
    bits = CIPHERS[oid(cipherOid)];
    if (!hash || !bits) throw new KeyError(unsupported);
    iv = content(ivElement);
    encrypted = content(data);
  } catch (error) {
    if (error instanceof KeyError) throw error;
    throw new KeyError("The password-protected key file is damaged.");
  }
  if (!iterations || iterations > 10_000_000) throw new KeyError(unsupported);
  const base = await subtle.importKey("raw", new TextEncoder().encode(password), "PBKDF2", false, ["deriveKey"]);
  const key = await subtle.deriveKey({ name: "PBKDF2", salt, iterations, hash }, base,
    { name: "AES-CBC", length: bits }, false, ["decrypt"]);
  try {
    return new Uint8Array(await subtle.decrypt({ name: "AES-CBC", iv }, key, encrypted));
  } catch (error) {
    throw new KeyPasswordError("The password is not right for this key file.");
  }
}

// --- OpenSSH's own private-key format (“OPENSSH PRIVATE KEY”, ssh-keygen's default) ------------

/** A reader of SSH wire-format fields (uint32, and strings with a uint32 length) in `bytes`. */
function sshReader(bytes, offset = 0) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const cut = () => new KeyError("This OpenSSH key file is cut short.");
  const reader = {
    uint32() {
      if (offset + 4 > bytes.length) throw cut();
      offset += 4;
      return view.getUint32(offset - 4);
    },
    string() {
      const length = reader.uint32();
      if (offset + length > bytes.length) throw cut();
      offset += length;
      return bytes.subarray(offset - length, offset);
    },
    text: () => new TextDecoder().decode(reader.string()),
  };
  return reader;
}

/** Read an unencrypted OpenSSH RSA private key into a JWK (PROTOCOL.key: "openssh-key-v1"). */
function jwkFromOpenSsh(raw) {
  const magic = new TextEncoder().encode("openssh-key-v1\0");
  if (raw.length < magic.length || toHex(raw.subarray(0, magic.length)) !== toHex(magic)) {
    throw new KeyError("This OpenSSH key file is damaged.");
  }
  const outer = sshReader(raw, magic.length);
  const cipher = outer.text();
  const kdf = outer.text();
  outer.string(); // kdf options
  if (cipher !== "none" || kdf !== "none") {
    throw new KeyError("This OpenSSH key file is protected by a passphrase. Convert it to a password-protected " +
      "PKCS#8 file, which this page opens: ssh-keygen -p -m pkcs8 -f yourkey");
  }
  if (outer.uint32() !== 1) throw new KeyError("This OpenSSH file does not hold one key.");
  outer.string(); // the public key
  const inner = sshReader(outer.string());
  if (inner.uint32() !== inner.uint32()) throw new KeyError("This OpenSSH key file is damaged.");
  const type = inner.text();
  if (type !== "ssh-rsa") throw new KeyError(`This is an OpenSSH ${type} key; the portal uses RSA keys (ssh-keygen -t rsa -b 4096).`);
  const [n, e, d, qi, p, q] = ["n", "e", "d", "iqmp", "p", "q"].map(() => bigFromBytes(inner.string()));
  const b64 = (value) => toBase64Url(bytesFromBig(value));
  return { n: b64(n), e: b64(e), d: b64(d), p: b64(p), q: b64(q), dp: b64(d % (p - 1n)), dq: b64(d % (q - 1n)), qi: b64(qi) };
}

/** Read a private key the user brings: PEM (PKCS#8, password-protected PKCS#8 or PKCS#1), an
 * OpenSSH key file, JWK or compact text. A password-protected file without `password` raises `KeyPasswordError`. */
export async function importPrivateKey(text, password = "") {
  const trimmed = (text || "").trim();
  if (!trimmed) throw new KeyError("The key is empty.");
  if (/^RDPK/i.test(trimmed)) return importCompactText(trimmed);
  if (trimmed.startsWith("{")) {
    let jwk;
    try {
      jwk = JSON.parse(trimmed);
    } catch (error) {
      throw new KeyError("This looks like a JWK but is not valid JSON.");
    }
    if (jwk.kty !== "RSA") throw new KeyError("This JWK is not an RSA key.");
    if (!jwk.d) throw new KeyError("This JWK is a public key; the private key is needed (it has “d”).");
    return importJwk(jwk);
  }
  const match = trimmed.match(/-----BEGIN ([A-Z ]+)-----([\s\S]*?)-----END \1-----/);
  if (!match) {
    throw new KeyError("Unrecognised key. Use a PEM file (“-----BEGIN PRIVATE KEY-----”), a JWK or a key text (“RDPK1:…”).");
  }
  const [, label, body] = match;
  if (label !== "ENCRYPTED PRIVATE KEY" && /ENCRYPTED/.test(body)) {
    throw new KeyError("This key file is protected by a password in an old format the browser cannot open. " +
      "Convert it: openssl pkcs8 -topk8 -v2 aes-256-cbc -in yourkey.pem -out yourkey-aes.pem");
  }
  if (label === "ENCRYPTED PRIVATE KEY" && !password) {
    throw new KeyPasswordError("This key file is protected by a password: type it to open the key.");
  }
  if (label === "OPENSSH PRIVATE KEY") {
    let raw;
    try {
      raw = fromBase64(body);
    } catch (error) {
      throw new KeyError("The OpenSSH key file is damaged (not valid base64).");
    }
    return importJwk(jwkFromOpenSsh(raw));
  }
  if (label === "PUBLIC KEY" || label === "RSA PUBLIC KEY") {
    throw new KeyError("This is a public key. To register it, use “Register a key made elsewhere”; here the private key is needed.");
  }
  let der;
  try {
    der = fromBase64(body);
  } catch (error) {
    throw new KeyError("The PEM text is damaged (not valid base64).");
  }
  if (label === "RSA PRIVATE KEY") {
    der = derTlv(0x30, concat(new Uint8Array([0x02, 0x01, 0x00]), RSA_ALGORITHM, derTlv(0x04, der)));
  } else if (label === "ENCRYPTED PRIVATE KEY") {
    der = await decryptPkcs8(der, password);
  } else if (label !== "PRIVATE KEY") {
    throw new KeyError(`A “${label}” PEM is not an RSA private key.`);
  }
  let key;
  try {
    key = await subtle.importKey("pkcs8", der, OAEP, true, ["decrypt"]);
  } catch (error) {
    if (label === "ENCRYPTED PRIVATE KEY") throw new KeyPasswordError("The password is not right for this key file.");
    throw new KeyError("The browser could not read this PEM as an RSA private key.");
  }
  return checked(key);
}

/** Unwrap a dataset's data key (RSA-OAEP) and return its raw 32 bytes. */
export async function unwrapDataKey(privateKey, wrappedBase64) {
  try {
    return new Uint8Array(await subtle.decrypt(OAEP, privateKey, fromBase64(wrappedBase64)));
  } catch (error) {
    throw new KeyError("Your key could not open this dataset's key (the key in this browser does not fit).");
  }
}

// --- chunks ------------------------------------------------------------------------------------------

const AAD_CONTEXT = new TextEncoder().encode("rdp-chunk-v1\0");

/** The associated data binding a chunk to its dataset and position (see storage.crypto.chunk_aad). */
export function chunkAad(datasetId, index) {
  const id = new TextEncoder().encode(datasetId);
  const out = new Uint8Array(AAD_CONTEXT.length + 4 + id.length + 8);
  const view = new DataView(out.buffer);
  out.set(AAD_CONTEXT, 0);
  view.setUint32(AAD_CONTEXT.length, id.length);
  out.set(id, AAD_CONTEXT.length + 4);
  view.setBigUint64(AAD_CONTEXT.length + 4 + id.length, BigInt(index));
  return out;
}

export async function importDataKey(raw) {
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["decrypt"]);
}

/** Decrypt and authenticate one chunk; a clear error naming the chunk when it does not verify. */
export async function decryptChunk(dataKey, datasetId, index, nonceBase64, ciphertext) {
  try {
    return new Uint8Array(await subtle.decrypt(
      { name: "AES-GCM", iv: fromBase64(nonceBase64), additionalData: chunkAad(datasetId, index), tagLength: 128 },
      dataKey, ciphertext));
  } catch (error) {
    throw new KeyError(`Chunk ${index} failed its integrity check: it was damaged, or the key is wrong.`);
  }
}

/** The dataset hash from the chunks' raw digests. */
export async function datasetHash(digests) {
  return toHex(await sha256(concat(...digests)));
}
