import { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { StoreKeyMissingError, StoreTransientError } from '../errors.js';
import { sdkErrorKind } from '../sdk-errors.js';
import type { PutOptions, Store } from './store.js';

const isMissing = (error: unknown) => {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
};

/**
 * An S3 error as the pipeline names it: one that may pass (the SDK's retries spent) becomes a
 * StoreTransientError for the Step Functions Retry; others (403, a bad request) stay as they are.
 */
function storeError(error: unknown, bucket: string, key: string): unknown {
  if (sdkErrorKind(error) === undefined) return error;
  const e = error as Error;
  return new StoreTransientError(`s3://${bucket}/${key}: ${e.name}: ${e.message}`, { cause: error });
}

/** The tag the bucket's lifecycle rule expires. */
export const INTERMEDIATE_TAG = { key: 'safer-instruct', value: 'intermediate' } as const;

/** A Store over one S3 bucket. */
export class S3Store implements Store {
  constructor(
    private readonly s3: S3Client,
    readonly bucket: string,
  ) {}

  async get(key: string): Promise<string> {
    const text = await this.tryGet(key);
    if (text === undefined) throw new StoreKeyMissingError(`no object at s3://${this.bucket}/${key}`);
    return text;
  }

  async tryGet(key: string): Promise<string | undefined> {
    try {
      const out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return (await out.Body?.transformToString('utf8')) ?? '';
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw storeError(error, this.bucket, key);
    }
  }

  async getStream(key: string): Promise<Readable> {
    try {
      const out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return out.Body as Readable;
    } catch (error) {
      if (isMissing(error)) throw new StoreKeyMissingError(`no object at s3://${this.bucket}/${key}`);
      throw storeError(error, this.bucket, key);
    }
  }

  async put(key: string, body: string | Uint8Array, options: PutOptions = {}): Promise<void> {
    await this.s3
      .send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ...(options.intermediate ? { Tagging: `${INTERMEDIATE_TAG.key}=${INTERMEDIATE_TAG.value}` } : {}),
        }),
      )
      .catch((error: unknown) => {
        throw storeError(error, this.bucket, key);
      });
  }

  async putStream(
    key: string,
    body: AsyncIterable<string | Uint8Array>,
    options: PutOptions = {},
  ): Promise<void> {
    // Multipart: an object is only visible once CompleteMultipartUpload succeeds.
    await new Upload({
      client: this.s3,
      params: {
        Bucket: this.bucket,
        Key: key,
        Body: Readable.from(body),
        ...(options.intermediate ? { Tagging: `${INTERMEDIATE_TAG.key}=${INTERMEDIATE_TAG.value}` } : {}),
      },
    })
      .done()
      .catch((error: unknown) => {
        throw storeError(error, this.bucket, key);
      });
  }

  async putIfAbsent(key: string, body: string): Promise<boolean> {
    try {
      await this.s3.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, IfNoneMatch: '*' }),
      );
      return true;
    } catch (error) {
      const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'PreconditionFailed' || e.$metadata?.httpStatusCode === 412) return false;
      // A concurrent conditional write to the same key; the other writer won.
      if (e.name === 'ConditionalRequestConflict' || e.$metadata?.httpStatusCode === 409) return false;
      throw storeError(error, this.bucket, key);
    }
  }

  async head(key: string): Promise<{ size: number; etag: string } | undefined> {
    try {
      const out = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: out.ContentLength ?? 0, etag: (out.ETag ?? '').replaceAll('"', '') };
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw storeError(error, this.bucket, key);
    }
  }
}
