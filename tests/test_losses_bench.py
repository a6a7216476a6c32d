"""bench.loss_memory: the per-device B^2/D memory claim on tiny sizes."""

from bench import loss_memory


def test_shard_map_damsm_memory_scales_as_b2_over_d(tmp_path):
  results = loss_memory.run(
      (32, 64), dim=8, regions=8, words=8, chunk=8,
      select=[("damsm_word", "shard_map")], use_subprocess=False)
  temp = {(r["devices"], r["batch"]): r["temp_bytes"]
          for r in results["rows"]}
  assert set(temp) == {(1, 32), (1, 64), (8, 32), (8, 64)}
  # Doubling B quadruples the unchunked attention on one device ...
  assert 3.5 < temp[(1, 64)] / temp[(1, 32)] < 4.5
  # ... and 8 devices each hold about an eighth of it.
  assert temp[(1, 64)] / temp[(8, 64)] > 5.0
  json_path, md_path = loss_memory.write(results, str(tmp_path))
  md = open(md_path).read()
  assert "| shard_map | 64 |" in md and "D1/D8 temp" in md
  assert '"temp_bytes"' in open(json_path).read()
