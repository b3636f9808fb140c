// Reference probabilities of face-api's own runtime (its bundled TensorFlow.js, CPU backend)
// for face crops, to check our PyTorch port of FaceExpressionNet against it.
//
//   node scripts/face_api_reference.mjs PACKAGE_DIR REQUEST.json
//
// PACKAGE_DIR: the unpacked npm package @vladmandic/face-api (its dist/ and model/).
// REQUEST.json: {"crops": [{"file": "crop0.rgb", "height": H, "width": W}, ...]} with raw
// uint8 RGB rows (H*W*3 bytes) per file, paths relative to REQUEST.json.
// Prints {"classes": [...], "probabilities": [[...], ...]} (face-api's class order).
import fs from 'fs';
import path from 'path';

const [packageDir, requestPath] = process.argv.slice(2);
if (!packageDir || !requestPath) {
  console.error('usage: node face_api_reference.mjs PACKAGE_DIR REQUEST.json');
  process.exit(2);
}
// The ESM bundle picks TensorFlow.js's browser platform when it sees a window; Node 20 has the
// fetch and TextEncoder that platform needs (its Node platform expects node's util module,
// which the bundle leaves out).
globalThis.window = globalThis;
globalThis.document = { createElement: () => ({}) };
const faceapi = await import(path.resolve(packageDir, 'dist/face-api.esm.js'));
const tf = faceapi.tf;
await tf.setBackend('cpu');
await tf.ready();

const manifest = JSON.parse(fs.readFileSync(path.join(packageDir, 'model/face_expression_model-weights_manifest.json')));
const bin = fs.readFileSync(path.join(packageDir, 'model/face_expression_model.bin'));
const weights = tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength), manifest[0].weights);
await faceapi.nets.faceExpressionNet.loadFromWeightMap(weights);

const request = JSON.parse(fs.readFileSync(requestPath));
const base = path.dirname(requestPath);
const probabilities = [];
for (const crop of request.crops) {
  const pixels = fs.readFileSync(path.join(base, crop.file));
  const image = tf.tensor3d(new Int32Array(pixels), [crop.height, crop.width, 3], 'int32');
  const out = await faceapi.nets.faceExpressionNet.predictExpressions(image);
  probabilities.push(['neutral', 'happy', 'sad', 'angry', 'fearful', 'disgusted', 'surprised'].map((c) => out[c]));
  image.dispose();
}
console.log(JSON.stringify({ classes: ['neutral', 'happy', 'sad', 'angry', 'fearful', 'disgusted', 'surprised'], probabilities, version: faceapi.version }));
