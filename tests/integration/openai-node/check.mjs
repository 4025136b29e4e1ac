// check.mjs: drive promptgate with the official OpenAI Node library, unchanged.
//
// usage: node check.mjs --base http://127.0.0.1:PORT/v1 [--model qwen2.5-7b]
//            [--embed-model text-embedding-3-small] [--mock http://127.0.0.1:MPORT]
//            [--backend-key KEY]
//
// Each check prints "ok   NAME" or "FAIL NAME: reason"; the last line is
// "N passed, N failed" and the exit status is 0 only when nothing failed.
// With --mock, the script also reads the mock's /_mock/requests and /_mock/stats
// to check what the gateway sent upstream and that an aborted stream was
// cancelled upstream. tests/integration/test_gateway_openai_node.py runs it.

import OpenAI from 'openai';

const CLIENT_KEY = 'sk-client-key-must-not-reach-upstream';

function parseArgs(argv) {
    const opts = { model: 'qwen2.5-7b', embedModel: 'text-embedding-3-small' };
    const names = { '--base': 'base', '--model': 'model', '--embed-model': 'embedModel',
                    '--mock': 'mock', '--backend-key': 'backendKey' };
    for (let i = 0; i < argv.length; i++) {
        const key = names[argv[i]];
        if (!key || i + 1 >= argv.length) {
            console.error(`check.mjs: bad argument '${argv[i]}'\n` +
                'usage: node check.mjs --base URL/v1 [--model M] [--embed-model M] ' +
                '[--mock URL] [--backend-key KEY]');
            process.exit(2);
        }
        opts[key] = argv[++i];
    }
    if (!opts.base) {
        console.error('check.mjs: --base is required (the gateway URL ending in /v1)');
        process.exit(2);
    }
    return opts;
}

const opts = parseArgs(process.argv.slice(2));
const client = new OpenAI({ baseURL: opts.base, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 10000 });
let passed = 0;
let failed = 0;

function assert(cond, msg) {
    if (!cond) throw new Error(msg);
}

async function check(name, fn) {
    try {
        await fn();
        passed++;
        console.log(`ok   ${name}`);
    } catch (e) {
        failed++;
        const detail = e && e.status ? ` (status ${e.status}, body ${JSON.stringify(e.error)})` : '';
        console.log(`FAIL ${name}: ${e && e.message ? e.message : e}${detail}`);
    }
}

async function mockGet(path) {
    const r = await fetch(opts.mock + path);
    assert(r.ok, `mock ${path} answered ${r.status}`);
    return r.json();
}

async function waitFor(pred, ms) {
    const end = Date.now() + ms;
    for (;;) {
        if (await pred()) return true;
        if (Date.now() > end) return false;
        await new Promise((res) => setTimeout(res, 20));
    }
}

const messages = [{ role: 'user', content: 'Say something about the weather in Lyon.' }];
let plain = null; /* the non-streamed answer, to compare the streams with */

await check('models.list', async () => {
    const ids = [];
    for await (const m of client.models.list()) {
        assert(m.object === 'model', `model object is ${JSON.stringify(m.object)}, want "model"`);
        ids.push(m.id);
    }
    for (const want of [opts.model, opts.embedModel])
        assert(ids.includes(want), `models.list gave ${JSON.stringify(ids)}, missing ${want}`);
});

await check('chat.completions.create', async () => {
    const { data, response } = await client.chat.completions
        .create({ model: opts.model, messages, max_tokens: 8 }).withResponse();
    assert(response.status === 200, `status ${response.status}`);
    assert(response.headers.get('x-request-id'), 'no x-request-id header');
    assert(response.headers.get('x-promptgate-backend'), 'no x-promptgate-backend header');
    assert(data.object === 'chat.completion', `object ${data.object}`);
    assert(data.model === opts.model, `model ${data.model}`);
    const text = data.choices[0].message.content;
    assert(typeof text === 'string' && text.length > 0, `content ${JSON.stringify(text)}`);
    assert(data.choices[0].finish_reason === 'stop', `finish_reason ${data.choices[0].finish_reason}`);
    const u = data.usage;
    assert(u && u.prompt_tokens > 0 && u.completion_tokens > 0 &&
           u.total_tokens === u.prompt_tokens + u.completion_tokens, `usage ${JSON.stringify(u)}`);
    plain = data;
});

if (opts.mock) {
    await check('upstream got the backend key, not the client key', async () => {
        const rec = await mockGet('/_mock/requests');
        const chats = rec.requests.filter((r) => r.path === '/v1/chat/completions');
        assert(chats.length > 0, 'the mock recorded no chat request');
        const last = chats[chats.length - 1];
        const auth = last.headers.authorization;
        assert(!auth || !auth.includes(CLIENT_KEY), `client key forwarded upstream: ${auth}`);
        if (opts.backendKey)
            assert(auth === `Bearer ${opts.backendKey}`, `upstream authorization ${JSON.stringify(auth)}`);
        assert(last.body && last.body.model === opts.model, `upstream body ${JSON.stringify(last.body)}`);
    });
}

async function collectStream(extra) {
    const stream = await client.chat.completions.create({
        model: opts.model, messages, max_tokens: 8, stream: true, ...extra });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    return chunks;
}

await check('chat stream without include_usage', async () => {
    const chunks = await collectStream({});
    assert(chunks.length >= 3, `only ${chunks.length} chunks`);
    let text = '';
    for (const c of chunks) {
        assert(c.object === 'chat.completion.chunk', `chunk object ${c.object}`);
        assert(c.usage === undefined || c.usage === null, `usage in a chunk without include_usage: ${JSON.stringify(c.usage)}`);
        if (c.choices.length) text += c.choices[0].delta.content || '';
    }
    const last = chunks[chunks.length - 1];
    assert(last.choices[0] && last.choices[0].finish_reason === 'stop', `last chunk ${JSON.stringify(last)}`);
    if (plain)
        assert(text === plain.choices[0].message.content,
               `streamed text ${JSON.stringify(text)} != non-stream ${JSON.stringify(plain.choices[0].message.content)}`);
});

await check('chat stream with include_usage', async () => {
    const chunks = await collectStream({ stream_options: { include_usage: true } });
    assert(chunks.length >= 3, `only ${chunks.length} chunks`);
    const last = chunks[chunks.length - 1];
    assert(Array.isArray(last.choices) && last.choices.length === 0,
           `last chunk should have choices [] and usage: ${JSON.stringify(last)}`);
    const u = last.usage;
    assert(u && u.total_tokens === u.prompt_tokens + u.completion_tokens && u.completion_tokens > 0,
           `usage ${JSON.stringify(u)}`);
    if (plain)
        assert(JSON.stringify(u) === JSON.stringify(plain.usage),
               `stream usage ${JSON.stringify(u)} != non-stream ${JSON.stringify(plain.usage)}`);
    for (const c of chunks.slice(0, -1))
        assert(c.usage === null, `an earlier chunk has usage ${JSON.stringify(c.usage)}`);
});

let floats = null;
await check('embeddings.create (encoding_format float)', async () => {
    const r = await client.embeddings.create({
        model: opts.embedModel, input: ['hello', 'world'], encoding_format: 'float' });
    assert(r.object === 'list' && r.data.length === 2, `data ${JSON.stringify(r.data)}`);
    for (const [i, d] of r.data.entries()) {
        assert(d.index === i, `index ${d.index}`);
        assert(Array.isArray(d.embedding) && d.embedding.length > 0 &&
               d.embedding.every((x) => typeof x === 'number' && Number.isFinite(x)),
               `embedding ${JSON.stringify(d.embedding)}`);
    }
    assert(JSON.stringify(r.data[0].embedding) !== JSON.stringify(r.data[1].embedding),
           'two inputs gave the same vector');
    assert(r.usage && r.usage.prompt_tokens > 0, `usage ${JSON.stringify(r.usage)}`);
    floats = r.data[0].embedding;
});

/* the library's default asks for base64 and decodes it: this needs the
   backend (here the mock) to honour encoding_format; the gateway only relays */
await check('embeddings.create (library default, base64)', async () => {
    const r = await client.embeddings.create({ model: opts.embedModel, input: ['hello', 'world'] });
    const v = r.data[0].embedding;
    assert(floats, 'no float vector to compare with');
    assert(v.length === floats.length, `decoded ${v.length} floats, float format gave ${floats.length} ` +
           '(does the backend honour encoding_format=base64?)');
    for (let i = 0; i < v.length; i++)
        assert(Math.abs(v[i] - floats[i]) < 1e-5, `component ${i}: ${v[i]} vs ${floats[i]}`);
});

await check('NotFoundError for an unknown model', async () => {
    try {
        await client.chat.completions.create({ model: 'no-such-model', messages });
    } catch (e) {
        assert(e instanceof OpenAI.NotFoundError, `got ${e.constructor.name}: ${e.message}`);
        assert(e.status === 404, `status ${e.status}`);
        assert(e.code === 'model_not_found', `code ${JSON.stringify(e.code)}`);
        assert(e.requestID || e.headers.get('x-request-id'), 'no request id on the error');
        return;
    }
    throw new Error('no error raised');
});

await check('BadRequestError for a malformed JSON body (client.post)', async () => {
    try {
        await client.post('/chat/completions', {
            body: new TextEncoder().encode('{"model": "' + opts.model + '", "messages": ['),
            headers: { 'content-type': 'application/json' },
        });
    } catch (e) {
        assert(e instanceof OpenAI.BadRequestError, `got ${e.constructor.name}: ${e.message}`);
        assert(e.code === 'invalid_json', `code ${JSON.stringify(e.code)}`);
        assert(typeof e.error.message === 'string' && e.error.message.length > 0, 'empty message');
        return;
    }
    throw new Error('no error raised');
});

await check('BadRequestError for a body without model', async () => {
    try {
        await client.post('/chat/completions', { body: { messages } });
    } catch (e) {
        assert(e instanceof OpenAI.BadRequestError, `got ${e.constructor.name}: ${e.message}`);
        assert(e.code === 'missing_model', `code ${JSON.stringify(e.code)}`);
        return;
    }
    throw new Error('no error raised');
});

await check('malformed JSON with raw fetch: 400 invalid_json in OpenAI shape', async () => {
    const r = await fetch(opts.base + '/chat/completions', {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${CLIENT_KEY}` },
        body: '{"model": ' });
    assert(r.status === 400, `status ${r.status}`);
    assert((r.headers.get('content-type') || '').startsWith('application/json'),
           `content-type ${r.headers.get('content-type')}`);
    const j = await r.json();
    assert(j.error && j.error.code === 'invalid_json' && typeof j.error.type === 'string' &&
           typeof j.error.message === 'string', `body ${JSON.stringify(j)}`);
});

await check('aborting a stream midway leaves the gateway serving', async () => {
    /* a slow, long stream: 200 tokens 20 ms apart, aborted after 3 chunks */
    const stream = await client.chat.completions.create(
        { model: opts.model, messages, stream: true },
        { headers: { 'x-mock-fault': 'tokens=200,token-delay-ms=20' } });
    let n = 0;
    const t0 = Date.now();
    try {
        for await (const c of stream) {
            void c;
            if (++n === 3) stream.controller.abort();
        }
    } catch (e) {
        if (!(e instanceof OpenAI.APIUserAbortError) && e.name !== 'AbortError') throw e;
    }
    assert(n >= 3 && n < 50, `read ${n} chunks before the abort took effect`);
    assert(Date.now() - t0 < 3000, 'the abort took too long');
    if (opts.mock) {
        const ok = await waitFor(async () => (await mockGet('/_mock/stats')).active_streams === 0, 2000);
        assert(ok, 'the mock still streams 2 s after the client aborted (upstream not cancelled)');
    }
    const r = await client.chat.completions.create({ model: opts.model, messages, max_tokens: 4 });
    assert(r.choices[0].message.content, 'no answer after the abort');
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert(ids.includes(opts.model), 'models.list after the abort');
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
