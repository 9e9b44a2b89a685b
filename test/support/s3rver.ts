/**
 * An in-process s3rver (a local S3 emulator) for contract tests of the S3 store.
 *
 * s3rver 3.7.1 answers SDK v3 with `forcePathStyle: true`. What it lacks that the store uses:
 * it ignores `If-None-Match` on PutObject (a second conditional write succeeds and overwrites), and
 * it ignores the `x-amz-tagging` header on PutObject and CreateMultipartUpload (GetObjectTagging
 * answers an empty set). So the server records each request's headers: a test can at least see
 * what reached it.
 */
import { rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { tempDir } from './temp.js';

/** One request as s3rver received it. */
export interface S3RequestRecord {
  readonly method: string;
  /** The path and query string, still URL-encoded. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

/** A running s3rver with one bucket, and a client pointed at it. */
export interface S3rverHandle {
  readonly bucket: string;
  readonly endpoint: string;
  readonly client: S3Client;
  /** Every request received so far, oldest first. */
  readonly requests: readonly S3RequestRecord[];
  /** Stops the server and removes its directory. */
  close(): Promise<void>;
}

/** Starts s3rver on a free port over a fresh temporary directory, with `bucket` already created. */
export async function startS3rver(bucket = 'contract-bucket'): Promise<S3rverHandle> {
  const directory = tempDir('safer-instruct-s3rver-');
  const s3rver = new S3rver({ directory, silent: true, configureBuckets: [{ name: bucket, configs: [] }] });
  await s3rver.configureBuckets();
  const handle = s3rver.callback();
  const requests: S3RequestRecord[] = [];
  // Our own http server around s3rver's handler, rather than s3rver.run(), so requests can be recorded.
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handle(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new S3Client({
    endpoint,
    forcePathStyle: true,
    region: 'us-east-1',
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  return {
    bucket,
    endpoint,
    client,
    requests,
    async close() {
      client.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) =>
        server.close((error) => (error ? reject(error) : resolve())),
      );
      await rm(directory, { recursive: true, force: true });
    },
  };
}
