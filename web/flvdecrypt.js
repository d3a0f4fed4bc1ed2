// flvdecrypt.js: decrypts the livefuse FLV scheme (encryption/FLV.md,
// "livefuse-flv-sample-aes" version 1) in the browser with WebCrypto.
//
// FLVDecryptor takes FLV bytes as they arrive and gives back the clear FLV
// stream, in order: onEncryption tags are read and dropped, the media tags
// they announce as encrypted are decrypted in place (same sizes), all
// other bytes pass as they are. makeDecryptingLoader builds an mpegts.js
// custom loader on top of it.
(function (global) {
  'use strict';

  const SCHEME = 'livefuse-flv-sample-aes';

  // readAMFString reads an AMF0 short string body at off (after the type byte).
  function readU16(b, off) { return (b[off] << 8) | b[off + 1]; }
  function readU24(b, off) { return (b[off] << 16) | (b[off + 1] << 8) | b[off + 2]; }
  function readU32(b, off) { return ((b[off] << 24) >>> 0) + ((b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]); }

  const td = new TextDecoder();

  // parseScript decodes the AMF0 values the onEncryption tag uses (string,
  // number, boolean, ECMA array, object). It returns [name, values] or
  // null for other script tags.
  function parseScript(b) {
    let off = 0;
    function value() {
      const t = b[off++];
      switch (t) {
        case 0: { const v = new DataView(b.buffer, b.byteOffset + off, 8).getFloat64(0); off += 8; return v; }
        case 1: return b[off++] !== 0;
        case 2: { const n = readU16(b, off); off += 2; const s = td.decode(b.subarray(off, off + n)); off += n; return s; }
        case 3: case 8: {
          if (t === 8) off += 4;
          const o = {};
          for (;;) {
            const n = readU16(b, off); off += 2;
            if (n === 0 && b[off] === 9) { off++; return o; }
            const k = td.decode(b.subarray(off, off + n)); off += n;
            o[k] = value();
          }
        }
        case 5: case 6: return null;
        default: throw new Error('AMF0 type ' + t + ' not supported');
      }
    }
    if (b[0] !== 2) return null;
    const name = value();
    if (name !== 'onEncryption') return [name, null];
    return [name, value()];
  }

  function hexBytes(s) {
    const h = s.replace(/^0x/i, '');
    if (!/^[0-9a-fA-F]{32}$/.test(h)) throw new Error('bad iv ' + s);
    const out = new Uint8Array(16);
    for (let i = 0; i < 16; i++) out[i] = parseInt(h.substr(2 * i, 2), 16);
    return out;
  }

  // blocksOfNALU appends the offsets (in tag data) of the encrypted blocks
  // of the NAL unit at [start, start+len) to out (FLV.md §1.1).
  function blocksOfNALU(out, start, len) {
    if (len <= 48) return;
    for (let pos = 32; pos < len;) {
      if (len - pos > 16) { out.push(start + pos); pos += 16; }
      pos += Math.min(144, len - pos);
    }
  }

  class FLVDecryptor {
    // opts.fetchKey(keyUri, keyId) -> Promise<ArrayBuffer of 16 bytes>;
    // opts.filter(tag) -> boolean, optional: a clear tag is given back
    // only when it says true (the SDK drops what the page already showed
    // when it reconnects); opts.dropHeader: the FLV header is not given
    // back (a reconnect continues a stream the demuxer already has).
    constructor(opts) {
      this.fetchKey = opts.fetchKey;
      this.filter = opts.filter || null;
      this.dropHeader = !!opts.dropHeader;
      this.buf = new Uint8Array(0);
      this.headerDone = false;
      this.state = null; // {key: CryptoKey, iv: Uint8Array, id}
      this.keys = new Map();
      this.stats = { tags: 0, decrypted: 0, signals: 0 };
    }

    // push appends input bytes and resolves to the clear bytes of every
    // tag completed so far.
    async push(chunk) {
      const b = new Uint8Array(this.buf.length + chunk.byteLength);
      b.set(this.buf, 0);
      b.set(new Uint8Array(chunk), this.buf.length);
      const parts = [];
      let off = 0;
      if (!this.headerDone) {
        if (b.length < 13) { this.buf = b; return new Uint8Array(0); }
        const hl = readU32(b, 5);
        if (b[0] !== 0x46 || b[1] !== 0x4c || b[2] !== 0x56 || hl < 9) throw new Error('not FLV');
        if (b.length < hl + 4) { this.buf = b; return new Uint8Array(0); }
        if (!this.dropHeader) parts.push(b.slice(0, hl + 4));
        off = hl + 4;
        this.headerDone = true;
      }
      while (b.length - off >= 11) {
        const size = readU24(b, off + 1);
        const total = 11 + size + 4;
        if (b.length - off < total) break;
        const tag = b.slice(off, off + total);
        off += total;
        const out = await this.tag(tag, size);
        if (out && (!this.filter || this.filter(out))) parts.push(out);
      }
      this.buf = b.slice(off);
      let n = 0;
      for (const p of parts) n += p.length;
      const res = new Uint8Array(n);
      n = 0;
      for (const p of parts) { res.set(p, n); n += p.length; }
      return res;
    }

    async tag(tag, size) {
      this.stats.tags++;
      const type = tag[0] & 0x1f;
      const data = tag.subarray(11, 11 + size);
      if (type === 18) {
        let parsed = null;
        try { parsed = parseScript(data); } catch (e) { parsed = null; }
        if (parsed && parsed[0] === 'onEncryption') {
          this.stats.signals++;
          await this.signal(parsed[1]);
          return null; // the clear stream does not have it
        }
        return tag;
      }
      if (!this.state) return tag;
      const offs = [];
      if (type === 9 && size > 5 && (data[0] & 0x0f) === 7 && data[1] === 1) {
        for (let pos = 5; pos + 4 <= size;) {
          const l = readU32(data, pos);
          pos += 4;
          if (l > size - pos) throw new Error('AVCC length past the tag');
          const t = data[pos] & 0x1f;
          if (l > 0 && (t === 1 || t === 5)) {
            const first = offs.length;
            blocksOfNALU(offs, pos, l);
            if (offs.length > first) offs[first] = -offs[first] - 1; // mark a unit's first block
          }
          pos += l;
        }
      } else if (type === 8 && size > 2 && (data[0] >> 4) === 10 && data[1] === 1) {
        const l = size - 2;
        for (let pos = 16; pos + 16 <= l; pos += 16) offs.push((pos === 16 ? -(2 + pos) - 1 : 2 + pos));
      }
      if (offs.length === 0) return tag;
      await this.decryptBlocks(data, offs);
      this.stats.decrypted++;
      return tag;
    }

    async signal(v) {
      if (!v || v.scheme !== SCHEME || v.version !== 1 || typeof v.encrypted !== 'boolean') throw new Error('bad onEncryption tag');
      if (!v.encrypted) { this.state = null; return; }
      if (v.method !== 'SAMPLE-AES' || typeof v.keyId !== 'string' || !/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(v.keyId)) throw new Error('bad onEncryption tag');
      const iv = hexBytes(v.iv);
      let key = this.keys.get(v.keyId);
      if (!key) {
        const raw = await this.fetchKey(v.keyUri, v.keyId);
        if (raw.byteLength !== 16) throw new Error('key of ' + raw.byteLength + ' bytes');
        key = await crypto.subtle.importKey('raw', raw, { name: 'AES-CBC' }, false, ['encrypt', 'decrypt']);
        this.keys.set(v.keyId, key);
      }
      this.state = { key, iv, id: v.keyId };
    }

    // decryptBlocks decrypts, in place in data, the 16-byte blocks at the
    // offsets in offs (a negative offset -o-1 starts a new CBC chain with
    // the IV: a new NAL unit or frame). All blocks of the tag go through
    // one WebCrypto call as one CBC message; the first block of every
    // chain but the first is then corrected (its real IV is the stream IV,
    // not the previous ciphertext block).
    async decryptBlocks(data, offs) {
      const n = offs.length;
      const ct = new Uint8Array(n * 16 + 16);
      const starts = [];
      for (let i = 0; i < n; i++) {
        let o = offs[i];
        if (o < 0) { o = -o - 1; offs[i] = o; starts.push(i); }
        ct.set(data.subarray(o, o + 16), i * 16);
      }
      const { key, iv } = this.state;
      // A last block that decrypts to a full PKCS#7 padding block, so that
      // WebCrypto accepts the message: E(key, C_last XOR 0x10...).
      const padIV = ct.subarray((n - 1) * 16, n * 16);
      const pad = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-CBC', iv: padIV }, key, new Uint8Array(16).fill(16)));
      ct.set(pad.subarray(0, 16), n * 16);
      const pt = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-CBC', iv }, key, ct));
      for (const i of starts) {
        if (i === 0) continue;
        for (let j = 0; j < 16; j++) pt[i * 16 + j] ^= ct[(i - 1) * 16 + j] ^ iv[j];
      }
      for (let i = 0; i < n; i++) data.set(pt.subarray(i * 16, i * 16 + 16), offs[i]);
    }
  }

  // keyFetcher returns a fetchKey function for a stream URL: key URIs
  // resolve against it and get its play token (auth_key) appended.
  function keyFetcher(streamURL) {
    const su = new URL(streamURL, global.location ? global.location.href : undefined);
    const token = su.searchParams.get('auth_key');
    return async function (keyUri, keyId) {
      const u = new URL(keyUri || ('/keys/' + keyId), su);
      if (token && !u.searchParams.has('auth_key')) u.searchParams.set('auth_key', token);
      const resp = await fetch(u.toString(), { credentials: 'omit', cache: 'no-store' });
      if (!resp.ok) throw new Error('key request: HTTP ' + resp.status);
      return resp.arrayBuffer();
    };
  }

  // makeDecryptingLoader returns an mpegts.js custom loader class (config
  // customLoader) that fetches the stream and hands mpegts.js the clear
  // FLV. Errors (a refused key, a bad tag) end the load with an error.
  function makeDecryptingLoader(mpegts, onStats) {
    const Base = mpegts.BaseLoader;
    const Status = mpegts.LoaderStatus || { kIdle: 0, kConnecting: 1, kBuffering: 2, kError: 3, kComplete: 4 };
    const Errors = mpegts.LoaderErrors || { EXCEPTION: 'Exception', HTTP_STATUS_CODE_INVALID: 'HttpStatusCodeInvalid' };
    return class DecryptingLoader extends Base {
      constructor(seekHandler, config) {
        super('livefuse-decrypting-loader');
        this._needStash = true;
        this._abort = null;
      }
      static isSupported() { return !!(global.fetch && global.crypto && global.crypto.subtle); }
      open(dataSource, range) {
        this._status = Status.kConnecting;
        const ac = new AbortController();
        this._abort = ac;
        const dec = new FLVDecryptor({ fetchKey: keyFetcher(dataSource.url) });
        let outPos = 0;
        const run = async () => {
          const resp = await fetch(dataSource.url, { signal: ac.signal, cache: 'no-store' });
          if (!resp.ok) {
            this._status = Status.kError;
            if (this._onError) this._onError(Errors.HTTP_STATUS_CODE_INVALID, { code: resp.status, msg: resp.statusText });
            return;
          }
          this._status = Status.kBuffering;
          const reader = resp.body.getReader();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            const clear = await dec.push(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
            if (onStats) onStats(dec.stats);
            if (clear.length > 0 && this._onDataArrival) {
              const start = outPos;
              outPos += clear.length;
              this._onDataArrival(clear.buffer, start, outPos);
            }
          }
          this._status = Status.kComplete;
          if (this._onComplete) this._onComplete(range.from, range.from + outPos - 1);
        };
        run().catch((e) => {
          if (ac.signal.aborted) return;
          this._status = Status.kError;
          if (this._onError) this._onError(Errors.EXCEPTION, { code: -1, msg: String(e && e.message || e) });
        });
      }
      abort() {
        if (this._abort) this._abort.abort();
        this._status = Status.kComplete;
      }
    };
  }

  global.LivefuseFLV = { FLVDecryptor, makeDecryptingLoader, keyFetcher, parseScript };
})(typeof window !== 'undefined' ? window : globalThis);
