// Private keys kept in this browser only (localStorage, per portal user). They never go to the
// server; the pages use them to unwrap dataset keys.

import { describePrivateKey, importPrivateKey } from "./crypto.js";

const subtle = globalThis.crypto.subtle;
const OAEP = { name: "RSA-OAEP", hash: "SHA-256" };

function storageName(user) {
  return `rdp.storage.keys.${user}`;
}

function readAll(user) {
  try {
    return JSON.parse(localStorage.getItem(storageName(user)) || "[]");
  } catch (error) {
    return [];
  }
}

/** The kept keys' records: {fingerprint, name, savedAt} (without the secret parts). */
export function listKeys(user) {
  return readAll(user).map(({ fingerprint, name, savedAt }) => ({ fingerprint, name, savedAt }));
}

export function hasKey(user, fingerprint) {
  return readAll(user).some((entry) => entry.fingerprint === fingerprint);
}

/** Keep a described key (see crypto.describePrivateKey) under a name. */
export function saveKey(user, described, name) {
  const entries = readAll(user).filter((entry) => entry.fingerprint !== described.fingerprint);
  entries.push({ fingerprint: described.fingerprint, name, jwk: described.jwk, savedAt: new Date().toISOString() });
  localStorage.setItem(storageName(user), JSON.stringify(entries));
}

export function forgetKey(user, fingerprint) {
  const entries = readAll(user).filter((entry) => entry.fingerprint !== fingerprint);
  localStorage.setItem(storageName(user), JSON.stringify(entries));
}

/** The kept key with this fingerprint, described (CryptoKey, JWK, PEM), or null. */
export async function loadKey(user, fingerprint) {
  const entry = readAll(user).find((item) => item.fingerprint === fingerprint);
  if (!entry) return null;
  const key = await subtle.importKey("jwk", entry.jwk, OAEP, true, ["decrypt"]);
  return { ...(await describePrivateKey(key)), name: entry.name };
}

/** Import a key text (PEM, JWK, compact) and keep it. */
export async function importAndSave(user, text, name) {
  const described = await importPrivateKey(text);
  saveKey(user, described, name);
  return described;
}
