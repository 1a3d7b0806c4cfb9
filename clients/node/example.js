// Spindle from Node.js with nothing but the generic gRPC packages and the files in proto/:
// submit a job, watch its progress, lose the stream and resume it with after_seq (no gap,
// no duplicate), and read the errors Spindle sends (google.rpc.Status with a BadRequest
// naming the field), both a refused Submit's and a refused job of a SubmitBatch.
//
// Run: npm ci && node example.js [host:port]   (default 127.0.0.1:50051)

"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTO_DIR = process.env.SPINDLE_PROTO_DIR || path.join(__dirname, "..", "..", "proto");
const server = process.argv[2] || "127.0.0.1:50051";

const definition = protoLoader.loadSync("spindle/v1/spindle.proto", {
  includeDirs: [PROTO_DIR],
  longs: Number, // seq and counters as plain numbers
  enums: String, // states as their names, e.g. "JOB_STATE_SUCCEEDED"
  defaults: true,
});
const spindle = grpc.loadPackageDefinition(definition).spindle.v1;
const client = new spindle.JobService(server, grpc.credentials.createInsecure());

// The error details, decoded with protobufjs from proto/google/rpc.
const errors = new protobuf.Root();
errors.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
errors.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
const Status = errors.lookupType("google.rpc.Status");
const BadRequest = errors.lookupType("google.rpc.BadRequest");

// JSON -> google.protobuf.Struct as proto-loader wants it. Its field names are camelCase
// (numberValue, not number_value): a Value with neither set reaches the server empty, and
// Spindle refuses it naming the field.
function toValue(v) {
  if (v === null) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v) };
}
function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = toValue(value);
  return { fields };
}

// The field violations of a google.rpc.Status's details.
function violations(status) {
  return status.details
    .filter((any) => any.type_url === "type.googleapis.com/google.rpc.BadRequest")
    .flatMap((any) => BadRequest.decode(any.value).fieldViolations)
    .map((v) => `${v.field}: ${v.description}`);
}

// A refused call's google.rpc.Status, from the grpc-status-details-bin trailer.
function statusOf(error) {
  const [bytes] = error.metadata.get("grpc-status-details-bin");
  return Status.toObject(Status.decode(bytes), { defaults: true });
}

const call = (method, request) =>
  new Promise((resolve, reject) =>
    client[method](request, (error, answer) => (error ? reject(error) : resolve(answer))),
  );

// Reads a WatchProgress stream from after_seq; with `stopAfter`, drops the stream after
// that many events, as a lost connection would.
function watch(id, afterSeq, stopAfter, seen) {
  return new Promise((resolve, reject) => {
    const stream = client.watchProgress({ id, afterSeq });
    let count = 0;
    stream.on("data", (event) => {
      seen.push(event);
      count += 1;
      if (stopAfter && count === stopAfter) stream.cancel();
    });
    stream.on("error", (error) =>
      error.code === grpc.status.CANCELLED ? resolve("dropped") : reject(error),
    );
    stream.on("end", () => resolve("ended"));
  });
}

async function main() {
  const submitted = await call("submit", {
    kind: "demo.sleep",
    args: toStruct({ seconds: 0.6, steps: 6 }),
  });
  const id = submitted.job.id;
  console.log(`submitted: ${id} ${submitted.job.state}`);

  const seen = [];
  await watch(id, 0, 2, seen); // the stream is lost after two events...
  const resumedAfter = seen[seen.length - 1].seq;
  await watch(id, resumedAfter, 0, seen); // ...and resumed after the last seq seen
  const seqs = seen.map((e) => e.seq);
  const ordered = seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]);
  console.log(`resumed after seq ${resumedAfter}: seqs ${seqs.join(",")} ordered=${ordered}`);
  const last = seen[seen.length - 1];
  console.log(`finished: ${last.finished.state}`);

  try {
    await call("submit", { kind: "demo.sleep", args: toStruct({ seconds: "soon" }) });
  } catch (error) {
    const status = statusOf(error);
    console.log(`refused: code ${error.code} ${violations(status).join("; ")}`);
  }

  const batch = await call("submitBatch", {
    jobs: [
      { kind: "demo.noop", args: toStruct({}) },
      { kind: "demo.sleep", args: { fields: { seconds: { number_value: 1 } } } },
    ],
  });
  for (const [i, result] of batch.results.entries()) {
    if (result.submitted) {
      console.log(`batch[${i}]: accepted ${result.submitted.state}`);
    } else {
      const details = violations({ details: result.error.details });
      console.log(`batch[${i}]: refused code ${result.error.code} ${details.join("; ")}`);
    }
  }
  client.close();
}

main().catch((error) => {
  console.error(`example failed: ${error.message}`);
  process.exit(1);
});
