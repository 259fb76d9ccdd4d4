// Fossil deltas for the browser module (state topics with "delta":"fossil"): a plain ES module, no build step.
//
//   import { applyDelta } from '/js/fossil.js';
//   const next = applyDelta(previousBytes, deltaBytes); // Uint8Array in, Uint8Array out
//
// The format (fossil-scm.org, www/delta_format.wiki): SIZE "\n", then segments, each a copy LENGTH "@" OFFSET "," of
// source bytes or a literal LENGTH ":" BYTES, then CHECKSUM ";". Numbers are unsigned 32-bit, base 64, most significant
// digit first, digits 0-9 A-Z _ a-z ~. The checksum is the sum of the target's big-endian 32-bit words (the last padded
// with zeros) wrapping at 2^32, as Fossil and npm fossil-delta compute it. The same codec as Client/FossilDelta.cs.
//
// applyDelta throws a FossilDeltaError for any malformed or corrupted delta, never allocates more than the size the
// delta declares, and refuses a declared size over maxOutputSize before allocating. createDelta (used by the tests)
// produces deltas any Fossil implementation applies.

/** The largest target applyDelta builds unless told otherwise: 16 MiB. */
export const DEFAULT_MAX_OUTPUT_SIZE = 16 * 1024 * 1024;

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~';
const DIGIT_CODES = Uint8Array.from(DIGITS, (c) => c.charCodeAt(0));
const DIGIT_VALUES = new Int8Array(256).fill(-1);
for (let i = 0; i < DIGIT_CODES.length; i++) DIGIT_VALUES[DIGIT_CODES[i]] = i;

const SIZE_END = 0x0a; // '\n'
const COPY = 0x40; // '@'
const COPY_END = 0x2c; // ','
const LITERAL = 0x3a; // ':'
const CHECKSUM_END = 0x3b; // ';'
const MAX_DIGITS = 6; // six base-64 digits hold 36 bits: more is never a 32-bit number

// Encoder parameters (see createDelta).
const BLOCK_SIZE = 16;
const MAX_CANDIDATES = 64;
const FRAMING_BOUND = 32;
const ROLL_MULTIPLIER = 0x01000193;
const BUCKET_MULTIPLIER = 0x9e3779b1 | 0;
let outgoingWeight = 1;
for (let i = 0; i < BLOCK_SIZE - 1; i++) outgoingWeight = Math.imul(outgoingWeight, ROLL_MULTIPLIER);

/** A delta that is malformed, does not fit its source, is over the size limit, or fails its checksum. */
export class FossilDeltaError extends Error {
  constructor(why) {
    super('Malformed Fossil delta: ' + why + '.');
    this.name = 'FossilDeltaError';
  }
}

/**
 * The target that `delta` builds from `source`.
 * @param {Uint8Array} source
 * @param {Uint8Array} delta
 * @param {number} [maxOutputSize] the largest target accepted (default 16 MiB)
 * @returns {Uint8Array}
 */
export function applyDelta(source, delta, maxOutputSize = DEFAULT_MAX_OUTPUT_SIZE) {
  const reader = new Reader(delta);
  const size = reader.number('target size');
  reader.expect(SIZE_END, 'the newline after the target size');
  if (size > maxOutputSize) throw new FossilDeltaError(`it declares a target of ${size} bytes, over the limit of ${maxOutputSize}`);
  const output = new Uint8Array(size);
  let written = 0;
  for (;;) {
    const start = reader.pos;
    const n = reader.number('a segment length or the checksum');
    const command = reader.command();
    if (command === COPY) {
      const offset = reader.number('a copy offset');
      reader.expect(COPY_END, 'the comma after a copy offset');
      if (n > size - written) throw new FossilDeltaError(`the copy at byte ${start} runs past the declared target size ${size}`);
      if (offset + n > source.length) {
        throw new FossilDeltaError(`the copy at byte ${start} (${n} bytes from ${offset}) runs past the end of the ${source.length}-byte source`);
      }
      output.set(source.subarray(offset, offset + n), written);
      written += n;
    } else if (command === LITERAL) {
      if (n > size - written) throw new FossilDeltaError(`the literal at byte ${start} runs past the declared target size ${size}`);
      output.set(reader.take(n), written);
      written += n;
    } else if (command === CHECKSUM_END) {
      if (written !== size) throw new FossilDeltaError(`it builds ${written} bytes but declares ${size}`);
      if (reader.pos !== delta.length) throw new FossilDeltaError(`${delta.length - reader.pos} bytes follow the trailer`);
      const actual = checksum(output);
      if (actual !== n) throw new FossilDeltaError(`the checksum of what it built is ${actual}, the delta says ${n}`);
      return output;
    } else {
      throw new FossilDeltaError(`byte ${reader.pos - 1} is not '@', ':' or ';'`);
    }
  }
}

/**
 * A delta that rebuilds `target` from `source`. The source is indexed by a rolling hash of each whole BLOCK_SIZE block;
 * a one-block window slides over the target, the source blocks with its hash are extended forwards and backwards
 * (back to what is already written), and the longest common run is written as a copy (after a literal of the bytes
 * before it) when that is shorter than the run; otherwise the window moves one byte. The rest is one literal.
 * @param {Uint8Array} source
 * @param {Uint8Array} target
 * @returns {Uint8Array}
 */
export function createDelta(source, target) {
  // A copy is written only when it (and the literal it closes) is shorter than its bytes, so the delta never exceeds
  // the target plus the header, the last literal's length and the trailer.
  const out = new Writer(target.length + FRAMING_BOUND);
  out.number(target.length);
  out.byte(SIZE_END);
  let done = 0;
  const blocks = Math.floor(source.length / BLOCK_SIZE);
  if (blocks > 0 && target.length >= BLOCK_SIZE) {
    const bits = Math.max(4, 32 - Math.clz32(blocks) + 1);
    const shift = 32 - bits;
    const heads = new Int32Array(1 << bits); // 1 + last block in the bucket, 0: none
    const chain = new Int32Array(blocks); // 1 + the block before it in its bucket
    const bucket = (hash) => Math.imul(hash, BUCKET_MULTIPLIER) >>> shift;
    for (let block = 0; block < blocks; block++) {
      const b = bucket(hashOf(source, block * BLOCK_SIZE));
      chain[block] = heads[b];
      heads[b] = block + 1;
    }

    let at = 0;
    let hash = hashOf(target, 0);
    for (;;) {
      let bestSource = 0;
      let bestTarget = 0;
      let bestLength = 0;
      let candidates = 0;
      for (let block = heads[bucket(hash)] - 1; block >= 0 && candidates < MAX_CANDIDATES; block = chain[block] - 1, candidates++) {
        const from = block * BLOCK_SIZE;
        let forward = 0;
        while (from + forward < source.length && at + forward < target.length && source[from + forward] === target[at + forward]) forward++;
        if (forward === 0) continue;
        const reach = Math.min(from, at - done);
        let backward = 0;
        while (backward < reach && source[from - backward - 1] === target[at - backward - 1]) backward++;
        if (backward + forward > bestLength) {
          bestSource = from - backward;
          bestTarget = at - backward;
          bestLength = backward + forward;
        }
      }

      if (bestLength > 0) {
        const gap = bestTarget - done;
        const cost = numberLength(bestLength) + numberLength(bestSource) + 2 + (gap > 0 ? numberLength(gap) + 1 : 0);
        if (cost < bestLength) {
          if (gap > 0) out.literal(target.subarray(done, bestTarget));
          out.number(bestLength);
          out.byte(COPY);
          out.number(bestSource);
          out.byte(COPY_END);
          done = at = bestTarget + bestLength;
          if (at > target.length - BLOCK_SIZE) break;
          hash = hashOf(target, at);
          continue;
        }
      }

      if (at + BLOCK_SIZE >= target.length) break;
      hash = (Math.imul(hash - Math.imul(target[at], outgoingWeight), ROLL_MULTIPLIER) + target[at + BLOCK_SIZE]) >>> 0;
      at++;
    }
  }

  if (done < target.length) out.literal(target.subarray(done));
  out.number(checksum(target));
  out.byte(CHECKSUM_END);
  return out.bytes();
}

function hashOf(bytes, start) {
  let hash = 0;
  for (let i = start; i < start + BLOCK_SIZE; i++) hash = (Math.imul(hash, ROLL_MULTIPLIER) + bytes[i]) >>> 0;
  return hash;
}

function numberLength(value) {
  let length = 1;
  while ((value = Math.floor(value / 64)) !== 0) length++;
  return length;
}

/** The sum of the bytes as big-endian 32-bit words, the last padded with zeros, wrapping at 2^32. */
function checksum(bytes) {
  let sum = 0;
  const whole = bytes.length & ~3;
  for (let i = 0; i < whole; i += 4) {
    sum = (sum + ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3])) | 0;
  }
  let last = 0;
  for (let i = whole; i < whole + 4; i++) last = (last << 8) | (i < bytes.length ? bytes[i] : 0);
  return (sum + last) >>> 0;
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  number(what) {
    const start = this.pos;
    let value = 0;
    let digit;
    while (this.pos < this.bytes.length && (digit = DIGIT_VALUES[this.bytes[this.pos]]) >= 0) {
      if (this.pos - start === MAX_DIGITS) throw new FossilDeltaError(`${what} at byte ${start} has more than ${MAX_DIGITS} digits`);
      value = value * 64 + digit;
      this.pos++;
    }
    if (this.pos === start) {
      throw new FossilDeltaError(this.pos === this.bytes.length ? `it ends where ${what} should be` : `byte ${start} should begin ${what}`);
    }
    if (value > 0xffffffff) throw new FossilDeltaError(`${what} at byte ${start} is over 32 bits`);
    return value;
  }

  command() {
    if (this.pos === this.bytes.length) throw new FossilDeltaError('it ends inside a segment');
    return this.bytes[this.pos++];
  }

  expect(byte, what) {
    if (this.pos === this.bytes.length || this.bytes[this.pos] !== byte) {
      throw new FossilDeltaError(this.pos === this.bytes.length ? `it ends where ${what} should be` : `byte ${this.pos} should be ${what}`);
    }
    this.pos++;
  }

  take(length) {
    if (length > this.bytes.length - this.pos) throw new FossilDeltaError(`a literal of ${length} bytes at byte ${this.pos} runs past its end`);
    const bytes = this.bytes.subarray(this.pos, this.pos + length);
    this.pos += length;
    return bytes;
  }
}

class Writer {
  constructor(capacity) {
    this.buffer = new Uint8Array(capacity);
    this.length = 0;
  }

  byte(b) {
    this.buffer[this.length++] = b;
  }

  number(value) {
    const length = numberLength(value);
    for (let i = this.length + length - 1; i >= this.length; i--) {
      this.buffer[i] = DIGIT_CODES[value % 64];
      value = Math.floor(value / 64);
    }
    this.length += length;
  }

  literal(bytes) {
    this.number(bytes.length);
    this.byte(LITERAL);
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
  }

  bytes() {
    return this.buffer.slice(0, this.length);
  }
}
