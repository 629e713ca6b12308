/** Mirrors transformers' TemperatureLogitsWarper: scores / temperature (temperature > 0; 1 is a no-op). */
export function applyTemperature(scores: Float64Array, temperature: number): void {
  if (temperature === 1) return;
  for (let i = 0; i < scores.length; i++) scores[i] /= temperature;
}
