import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface Float32Tensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/**
 * Writes float32 tensors as a safetensors file (https://huggingface.co/docs/safetensors): an 8-byte
 * little-endian header length, the JSON header (padded with spaces so the data starts 8-byte aligned),
 * then each tensor's bytes in order. Written to a temporary file beside `file`, then renamed: the file is
 * complete or absent.
 */
export async function writeFloat32Safetensors(file: string, tensors: Float32Tensor[]): Promise<void> {
  // safetensors data is little-endian; Float32Array bytes are the machine's.
  if (os.endianness() !== 'LE') throw new Error('writing safetensors needs a little-endian machine');
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const tensor of tensors) {
    const elements = tensor.shape.reduce((product, size) => product * size, 1);
    if (elements !== tensor.data.length) {
      throw new Error(`tensor ${tensor.name}: shape [${tensor.shape.join(', ')}] needs ${elements} values, got ${tensor.data.length}`);
    }
    header[tensor.name] = { dtype: 'F32', shape: tensor.shape, data_offsets: [offset, offset + tensor.data.byteLength] };
    offset += tensor.data.byteLength;
  }
  let headerText = JSON.stringify(header);
  headerText += ' '.repeat((8 - (Buffer.byteLength(headerText) % 8)) % 8);
  const headerBytes = Buffer.from(headerText, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  const target = path.resolve(file);
  const temporary = `${target}.tmp-${process.pid}`;
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(temporary, 'w');
    // writeFile, not write: it loops until every byte is written (one write(2) stops near 2 GiB).
    await handle.writeFile(Buffer.concat([prefix, headerBytes]));
    for (const tensor of tensors) {
      await handle.writeFile(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
    }
    await handle.close();
    handle = undefined;
    await fs.rename(temporary, target);
  } catch (error) {
    await handle?.close().catch(() => {});
    await fs.rm(temporary, { force: true });
    throw new Error(`cannot write ${target}: ${(error as Error).message}`);
  }
}
