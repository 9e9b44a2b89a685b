import { Readable } from 'node:stream';
import {
  GetObjectCommand,
  HeadObjectCommand,
  NoSuchKey,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { sdkStreamMixin } from '@smithy/util-stream';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { StoreKeyMissingError } from '../../lib/pipeline/errors.js';
import { S3Store } from '../../lib/pipeline/store/s3-store.js';

const s3 = mockClient(S3Client);
const store = () => new S3Store(new S3Client({ region: 'us-east-1' }), 'runs-bucket');
const failure = (name: string, status: number) =>
  new S3ServiceException({ name, $fault: 'client', $metadata: { httpStatusCode: status }, message: name });

describe('S3Store', () => {
  beforeEach(() => s3.reset());

  it('claims a key with a conditional write and reports a lost race as false', async () => {
    s3.on(PutObjectCommand).resolvesOnce({}).rejectsOnce(failure('PreconditionFailed', 412));

    const first = await store().putIfAbsent('runs/r/run.json', '{}');
    const second = await store().putIfAbsent('runs/r/run.json', '{}');

    expect([first, second]).toEqual([true, false]);
    expect(s3.commandCalls(PutObjectCommand)[0]?.args[0].input).toMatchObject({
      Bucket: 'runs-bucket',
      Key: 'runs/r/run.json',
      IfNoneMatch: '*',
    });
  });

  it('names a 503 SlowDown and a dropped connection StoreTransientError for the Retry, and leaves a 403 as it is', async () => {
    const slowDown = new S3ServiceException({
      name: 'SlowDown',
      $fault: 'server',
      $metadata: { httpStatusCode: 503 },
      message: 'Please reduce your request rate.',
    });
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    s3.on(PutObjectCommand).rejectsOnce(slowDown).rejectsOnce(failure('AccessDenied', 403));
    s3.on(GetObjectCommand).rejects(reset);

    const errors = await Promise.all([
      store()
        .put('cache/calls/ab/x.json', '{}')
        .catch((e: unknown) => e),
      store()
        .put('cache/calls/ab/x.json', '{}')
        .catch((e: unknown) => e),
      store()
        .tryGet('runs/r/manifest.json')
        .catch((e: unknown) => e),
    ]);

    expect(errors.map((e) => (e as Error).name)).toEqual([
      'StoreTransientError',
      'AccessDenied',
      'StoreTransientError',
    ]);
    expect((errors[0] as Error).message).toMatch(/^s3:\/\/runs-bucket\/cache\/calls\/ab\/x\.json: SlowDown/);
  });

  it('tags intermediate objects for the lifecycle rule', async () => {
    s3.on(PutObjectCommand).resolves({});

    await store().put('runs/r/shards/00000/split.jsonl', 'x', { intermediate: true });

    expect(s3.commandCalls(PutObjectCommand)[0]?.args[0].input.Tagging).toBe('safer-instruct=intermediate');
  });

  it('reads text and answers undefined for a missing key', async () => {
    const body = sdkStreamMixin(Readable.from([Buffer.from('hello')]));
    s3.on(GetObjectCommand, { Key: 'a' }).resolves({ Body: body });
    s3.on(GetObjectCommand, { Key: 'b' }).rejects(new NoSuchKey({ $metadata: {}, message: 'missing' }));

    expect(await store().tryGet('a')).toBe('hello');
    expect(await store().tryGet('b')).toBeUndefined();
    await expect(store().get('b')).rejects.toThrow(StoreKeyMissingError);
  });

  it('gives head without quotes around the ETag, and undefined for a 404', async () => {
    s3.on(HeadObjectCommand, { Key: 'a' }).resolves({ ContentLength: 5, ETag: '"abc"' });
    s3.on(HeadObjectCommand, { Key: 'b' }).rejects(failure('NotFound', 404));

    expect(await store().head('a')).toEqual({ size: 5, etag: 'abc' });
    expect(await store().head('b')).toBeUndefined();
  });

  it('passes on an access error instead of treating it as missing', async () => {
    s3.on(GetObjectCommand).rejects(failure('AccessDenied', 403));

    await expect(store().tryGet('a')).rejects.toMatchObject({ name: 'AccessDenied' });
  });
});
