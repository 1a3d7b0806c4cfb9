// A Spindle worker in Node.js, with nothing but @grpc/grpc-js, @grpc/proto-loader and the
// files in proto/: it declares the kind "text.upper" (with a JSON Schema Submit checks),
// takes jobs against credits, reports progress and a log line, completes each, grants a
// new credit when the server says the result is stored, and heartbeats.
//
// Run: (cd clients/node && npm ci) && NODE_PATH=clients/node/node_modules \
//        node examples/node_worker.js [host:port] [worker-id]

"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_DIR = process.env.SPINDLE_PROTO_DIR || path.join(__dirname, "..", "proto");
const server = process.argv[2] || "127.0.0.1:50051";
const workerId = process.argv[3] || `node-${process.pid}`;
const SLOTS = 4;

const definition = protoLoader.loadSync("spindle/worker/v1/worker.proto", {
  includeDirs: [PROTO_DIR],
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { WorkerService } = grpc.loadPackageDefinition(definition).spindle.worker.v1;
const client = new WorkerService(server, grpc.credentials.createInsecure());

// google.protobuf.Struct <-> JSON, as proto-loader spells it (camelCase value fields).
const toValue = (v) =>
  v === null ? { nullValue: "NULL_VALUE" }
  : typeof v === "number" ? { numberValue: v }
  : typeof v === "string" ? { stringValue: v }
  : typeof v === "boolean" ? { boolValue: v }
  : Array.isArray(v) ? { listValue: { values: v.map(toValue) } }
  : { structValue: toStruct(v) };
const toStruct = (o) => ({ fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, toValue(v)])) });
const fromValue = (v) => {
  switch (v.kind) {
    case "numberValue": return v.numberValue;
    case "stringValue": return v.stringValue;
    case "boolValue": return v.boolValue;
    case "listValue": return v.listValue.values.map(fromValue);
    case "structValue": return fromStruct(v.structValue);
    default: return null;
  }
};
const fromStruct = (s) => Object.fromEntries(Object.entries((s && s.fields) || {}).map(([k, v]) => [k, fromValue(v)]));

const session = client.Session();
const send = (message) => session.write(message);
let heartbeat;

send({
  hello: {
    workerId,
    kinds: [{
      name: "text.upper",
      description: "Upper-cases a text (a Node.js worker).",
      argsSchema: toStruct({ type: "object", required: ["text"], properties: { text: { type: "string" } } }),
    }],
    sdk: `node ${process.version}`,
  },
});

// A batch is several messages in one, taken in order.
session.on("data", (message) => {
  if (message.message === "batch") message.batch.messages.forEach(take);
  else take(message);
});

function take(message) {
  switch (message.message) {
    case "welcome": {
      const ms = message.welcome.heartbeatInterval.seconds * 1000 + message.welcome.heartbeatInterval.nanos / 1e6;
      heartbeat = setInterval(() => send({ heartbeat: {} }), ms || 10000);
      send({ credit: { slots: SLOTS } });
      console.log(`worker ${workerId} connected`);
      break;
    }
    case "assign": {
      const { lease, args } = message.assign;
      const text = fromStruct(args).text;
      send({ progress: { lease, workerSeq: 1, done: 1, total: 2, message: "upper-casing" } });
      send({ log: { lease, workerSeq: 2, message: `text of ${text.length} characters` } });
      send({ complete: { lease, result: toValue({ upper: text.toUpperCase(), worker: workerId }) } });
      break;
    }
    case "cancel":
      send({ release: { lease: message.cancel.lease, reason: "REASON_CANCELLED" } });
      break;
    case "settled":
      send({ credit: { slots: 1 } });
      break;
    case "drain": // an operator's DrainWorker: this worker finishes at once, so it can leave
      shutdown();
      break;
    default:
      break;
  }
}
session.on("error", (e) => {
  clearInterval(heartbeat);
  if (e.code !== grpc.status.CANCELLED) {
    console.error(`session ended: ${e.details}`);
    process.exitCode = 1;
  }
});
function shutdown() {
  send({ drain: {} });
  clearInterval(heartbeat);
  session.end();
  setTimeout(() => process.exit(0), 100);
}
process.on("SIGTERM", shutdown);
