// node:stream/promises — readable-stream's own promise API.
import stream from "./stream.js";

export const pipeline = stream.promises.pipeline;
export const finished = stream.promises.finished;
export default { pipeline, finished };
