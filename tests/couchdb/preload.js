'use strict';
// Loaded with `node -r ./preload.js node_modules/pouchdb-server/bin/pouchdb-server ...`.
//
// pouchdb-server 4.2.0 differs from Apache CouchDB 3 in ways that break aiocouch
// and runyard's CouchStore. This file makes it answer like CouchDB 3 for the gaps
// known when it was chosen as the test server (1-7) and for a few found while
// building on it (5b, 8-10).
// Each patch names its gap; tests/test_couchdb_server.py has a test per patch that
// fails without this file (RUNYARD_TEST_COUCHDB_NO_PRELOAD=1 shows it).
//
// How it hooks in: pouchdb-server mounts express-pouchdb, which builds its express
// app from "parts" (lib/compression.js, lib/routes/*.js: each `function (app)`),
// required one after another in a fixed order. A preload runs before any of that,
// so replacing a module's exports in the require cache swaps a part (or a small
// helper module) for our version, or mounts a route fix just before the stock part
// that has the gap. Only the modules named below are touched.

const {EventEmitter} = require('events');

function replaceModule(name, makeExports) {
  const file = require.resolve(name);
  const original = require(file);
  require.cache[file].exports = makeExports(original);
}

// Mount `install(app)` right before the stock express-pouchdb part `part`.
function beforePart(part, install) {
  replaceModule(`express-pouchdb/lib/${part}`, (original) => function (app) {
    install(app);
    return original(app);
  });
}

const utils = require('express-pouchdb/lib/utils');

function sendJSON(res, status, body) {
  res.status(status);
  res.setHeader('Content-Type', 'application/json');
  res.send(Buffer.from(JSON.stringify(body) + '\n', 'utf8'));
}

// 1. JSON was sent as text/plain unless `Accept` asked for JSON (aiohttp sends
//    `*/*`, so aiocouch could not decode anything). CouchDB 3 always says
//    application/json. Routes call these through `utils.`, so replacing the
//    exports is enough.
utils.setJsonOrPlaintext = (res) => res.setHeader('Content-Type', 'application/json');
utils.sendJSON = sendJSON;

// 2. Responses were gzipped whenever the client accepted gzip; the compression
//    middleware then buffers `_changes?feed=continuous` rows and heartbeats, which
//    never arrive. CouchDB 3 does not compress: drop that part.
replaceModule('express-pouchdb/lib/compression', () => function () {});

// 3. `_bulk_docs` results came back out of request order: the per-document checks
//    of pouchdb-validation/-security/-auth (all built on pouchdb-bulkdocs-wrapper)
//    resolve in completion order, and that module lists rejected docs first and the
//    others in the order their check finished. CouchDB answers in request order
//    (aiocouch asserts on it). Same contract, results kept in request order.
replaceModule('pouchdb-bulkdocs-wrapper', () => (handler) => (bulkDocs, args) => {
  const docs = args.docs;
  const rejected = new Array(docs.length).fill(null);
  const checks = docs.map((doc, i) => handler(doc, args).catch((err) => {
    err.id = doc._id;
    rejected[i] = err;
  }));
  return Promise.all(checks)
    .then(() => {
      args.docs = docs.filter((_, i) => rejected[i] === null);
      return bulkDocs();
    })
    .then((written) => {
      if (written.length !== args.docs.length) { // e.g. new_edits=false: nothing to align
        return rejected.filter(Boolean).concat(written);
      }
      let next = 0;
      return rejected.map((err) => err || written[next++]);
    });
});

// 7b. A `_changes` filter that does not exist (or any other error of a changes
//     feed read through its promise) crashed the server: pouchdb-changeslike-wrapper
//     re-emits 'error' on an emitter nobody listens to, which Node turns into an
//     uncaught exception. Forward 'error' only to listeners; the promise still
//     rejects, and the route answers 404 like CouchDB.
replaceModule('pouchdb-changeslike-wrapper', () => (handler) => (origChanges, args) => {
  const result = new EventEmitter();
  let cancelled = false;
  const promise = handler(() => {
    const feed = origChanges();
    for (const event of ['change', 'complete', 'error', 'create', 'update', 'delete']) {
      feed.on(event, (...a) => {
        if (event !== 'error' || result.listenerCount('error') > 0) result.emit(event, ...a);
      });
    }
    if (cancelled) feed.cancel();
    else result.on('cancel', () => feed.cancel());
    return feed;
  }, args);
  result.then = promise.then.bind(promise);
  result.catch = promise.catch.bind(promise);
  result.cancel = () => {
    cancelled = true;
    result.emit('cancel');
    result.removeAllListeners();
  };
  return result;
});

// CouchDB 3's conflict reason ends with a period (PouchDB's has none).
require('pouchdb-errors').REV_CONFLICT.message = 'Document update conflict.';

// 7a. An anonymous `PUT /newdb` while an admin exists crashed the server (the
//     route treats the rejected promise of the security wrapper as a database).
//     CouchDB answers 401. Mounted after authentication, before the stock route.
// 8. (found here) `PUT /db` and `DELETE /db` answered before pouchdb-all-dbs had
//    recorded the change in its own queue, so a server stopped right after lost
//    a new database (or got a deleted one back) on restart. CouchDB's answer
//    means done: hold the answer until that queue has passed (allDbs() queues
//    behind the pending write).
function answerAfterAllDbsRecorded(req, res, next) {
  const send = res.send;
  res.send = function (body) {
    const reply = () => send.call(res, body);
    req.PouchDB.allDbs().then(reply, reply);
    return res;
  };
  next();
}
beforePart('routes/db', (app) => {
  app.put('/:db', (req, res, next) => {
    const userCtx = (req.couchSession || {}).userCtx;
    if (!userCtx || userCtx.roles.indexOf('_admin') !== -1) return next(); // admin (party)
    sendJSON(res, 401, {error: 'unauthorized', reason: 'You are not a server admin.'});
  });
  app.put('/:db', answerAfterAllDbsRecorded);
  app.delete('/:db', answerAfterAllDbsRecorded);
});

// 4. `PUT /db/<id>` (e.g. `_design/x`) used the body's `_id` over the URL's.
//    CouchDB: the URL names the document. (Attachment routes come earlier.)
// 9. `DELETE /db/<id>` without a rev deleted the current revision; CouchDB 3
//    answers 409, so code that forgets the rev fails here as it would there.
beforePart('routes/documents', (app) => {
  app.put('/:db/:id(*)', utils.jsonParser, (req, res, next) => {
    if (req.body && typeof req.body === 'object' && !Array.isArray(req.body)) {
      req.body._id = req.params.id;
    }
    next();
  });
  app.delete('/:db/:id(*)', (req, res, next) => {
    if (req.query.rev || req.get('If-Match')) return next();
    sendJSON(res, 409, {error: 'conflict', reason: 'Document update conflict.'});
  });
});

// 5. `_find` returned no `bookmark` (aiocouch's find() raises KeyError). Ours is
//    an opaque token of the position after the page: passing it back gives the
//    next page, an empty last page repeats it (as CouchDB 3 does), `skip` counts
//    from it, and a malformed one is a 400. Like CouchDB, no `limit` means 25.
const encodeBookmark = (offset) => Buffer.from(JSON.stringify({o: offset})).toString('base64url');
function decodeBookmark(bookmark) {
  if (bookmark === undefined || bookmark === 'nil') return 0;
  try {
    const offset = JSON.parse(Buffer.from(String(bookmark), 'base64url').toString()).o;
    if (Number.isInteger(offset) && offset >= 0) return offset;
  } catch (e) { /* fall through */ }
  return -1;
}
beforePart('routes/find', (app) => {
  app.post('/:db/_find', utils.jsonParser, (req, res) => {
    const query = Object.assign({}, req.body);
    const start = decodeBookmark(query.bookmark);
    if (start < 0) {
      return sendJSON(res, 400, {error: 'invalid_bookmark', reason: 'Invalid bookmark value'});
    }
    delete query.bookmark;
    if (query.limit === undefined) query.limit = 25;
    // 5b. pouchdb-find crashes ("Cannot convert undefined or null to object")
    //     when a sort field is not in the selector; CouchDB only needs one of
    //     them there (docs without the others are not in the index anyway).
    if (query.selector && typeof query.selector === 'object' && Array.isArray(query.sort)) {
      query.selector = Object.assign({}, query.selector);
      for (const item of query.sort) {
        const name = typeof item === 'string' ? item : Object.keys(item || {})[0];
        if (name && !(name in query.selector)) query.selector[name] = {$exists: true};
      }
    }
    const skip = Number.isInteger(query.skip) && query.skip > 0 ? query.skip : 0;
    if (start + skip > 0) query.skip = start + skip;
    else delete query.skip;
    req.db.find(query, utils.makeOpts(req)).then((result) => {
      const bookmark = result.docs.length || start ? start + skip + result.docs.length : null;
      result.bookmark = bookmark === null ? 'nil' : encodeBookmark(bookmark);
      sendJSON(res, 200, result);
    }, (err) => utils.sendError(res, err, 400));
  });
  // 10. (found here) `_find`, `_explain` and `GET _index` ignored the database's
  //     `_security`: the stock routes do not hand the user to PouchDB, whose
  //     security wrapper then assumes "admin party", so anyone could read a
  //     protected database through `_find`. Pass the user (anonymous: 401).
  app.post('/:db/_explain', utils.jsonParser, (req, res) => {
    req.db.explain(req.body, utils.makeOpts(req), utils.sendCallback(res, 400));
  });
  app.get('/:db/_index', (req, res) => {
    req.db.getIndexes(utils.makeOpts(req), utils.sendCallback(res));
  });
});

// 6. and 7b. `_changes?feed=longpoll|continuous` ignored `timeout` (a feed only
//    ended when the client left) and sent a newline every 6 s nobody asked for.
//    CouchDB 3: with `heartbeat` an empty line every `heartbeat` ms and no end;
//    without it the feed ends after `timeout` ms (default and cap 60 s) without a
//    change, with `last_seq`. `filter=_selector` takes the POSTed selector (400
//    without one) instead of looking for a design doc called `_selector`.
const MAX_TIMEOUT = 60000;
function changesFixes(req, res, next) {
  const q = req.query;
  if (q.filter === '_selector') {
    const selector = req.body && req.body.selector;
    if (!selector || typeof selector !== 'object' || Array.isArray(selector)) {
      return sendJSON(res, 400, {
        error: 'bad_request', reason: 'Selector must be specified in POST payload'});
    }
    q.selector = selector;
  }
  if (q.feed !== 'longpoll' && q.feed !== 'continuous') return next();

  const heartbeat = q.heartbeat === true ? MAX_TIMEOUT : Number(q.heartbeat) || 0;
  const idleTimeout = heartbeat > 0 ? 0 :
    Math.min(Number(q.timeout) > 0 ? Number(q.timeout) : MAX_TIMEOUT, MAX_TIMEOUT);
  const opts = utils.makeOpts(req, Object.assign({}, q, {
    query_params: JSON.parse(JSON.stringify(q)),
    limit: q.limit !== undefined && q.limit < 1 ? 1 : q.limit,
  }));
  if (req.body && req.body.doc_ids) opts.doc_ids = req.body.doc_ids;

  let feed = null;
  let timer = null;
  let beat = null;
  let done = false;
  const stop = () => { // idempotent; true the first time
    if (done) return false;
    done = true;
    clearTimeout(timer);
    clearInterval(beat);
    if (feed) feed.cancel();
    return true;
  };
  const startOutput = () => {
    if (!res.headersSent) {
      res.status(200);
      res.setHeader('Content-Type', 'application/json');
      res.flushHeaders();
    }
  };
  const finish = (lastSeq) => {
    if (!stop()) return;
    startOutput();
    res.end(q.feed === 'continuous' ?
      JSON.stringify({last_seq: lastSeq, pending: 0}) + '\n' :
      JSON.stringify({results: [], last_seq: lastSeq}) + '\n');
  };
  const fail = (err) => {
    if (!stop()) return;
    if (res.headersSent) res.end();
    else utils.sendError(res, err);
  };
  const finishWithDbSeq = () => req.db.info().then((info) => finish(info.update_seq), fail);
  const resetIdle = () => {
    if (!idleTimeout) return;
    clearTimeout(timer);
    timer = setTimeout(finishWithDbSeq, idleTimeout);
  };
  if (heartbeat > 0) beat = setInterval(() => { startOutput(); res.write('\n'); }, heartbeat);
  res.on('close', stop); // the client left (or we ended): stop the feed and the timers

  resetIdle();
  // A one-shot read of what is there already comes first: it also meets any error
  // (no such filter, no access) while a proper error status can still be sent.
  req.db.changes(Object.assign({}, opts, {live: false, continuous: false})).then((first) => {
    if (done) return;
    const since = first.last_seq;
    if (q.feed === 'longpoll') {
      if (first.results.length) {
        stop();
        return sendJSON(res, 200, first);
      }
      feed = req.db.changes(Object.assign(opts, {live: true, continuous: true, since}))
        .on('change', (change) => {
          if (!stop()) return;
          startOutput();
          res.end(JSON.stringify({results: [change], last_seq: change.seq}) + '\n');
        })
        .on('error', fail);
      return;
    }
    startOutput();
    for (const change of first.results) res.write(JSON.stringify(change) + '\n');
    let left = opts.limit === undefined ? undefined : opts.limit - first.results.length;
    if (left !== undefined && left <= 0) return finish(since);
    feed = req.db.changes(Object.assign(opts, {live: true, continuous: true, since, limit: left}))
      .on('change', (change) => {
        if (done) return;
        res.write(JSON.stringify(change) + '\n');
        resetIdle();
        if (left !== undefined && --left <= 0) finish(change.seq);
      })
      .on('error', fail);
  }, fail);
}
beforePart('routes/changes', (app) => {
  app.get('/:db/_changes', changesFixes);
  app.post('/:db/_changes', utils.jsonParser, changesFixes);
});

// Test harness: when the Python process that started us goes away (even by
// SIGKILL), go too, so no node process outlives the test session.
const parentPid = Number(process.env.RUNYARD_COUCH_PARENT_PID || 0);
if (parentPid) {
  setInterval(() => {
    if (process.ppid !== parentPid) process.exit(0);
  }, 500).unref();
}
