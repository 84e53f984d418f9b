"""The README's main job (launch/demo.py) end to end, in its seconds-long smoke variant."""

import json

import pytest

from launch import demo
from launch.configs import demo as demo_config


@pytest.fixture(scope='module')
def smoke_report(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('demo')
  demo.run(demo_config.get_config('smoke'), workdir,
           data_dir=str(tmp_path_factory.mktemp('tfds')))
  return workdir


def test_demo_writes_report_with_all_lifters(smoke_report):
  report = (smoke_report / 'report.md').read_text()
  for name in ('sparse-only', 'HiPART', 'oracle'):
    assert name in report
  results = json.loads((smoke_report / 'report.json').read_text())['results']
  assert set(results) == {'lifter_sparse', 'lifter_hierarchical', 'lifter_oracle'}
  for table in results.values():
    assert set(table) == {'none', 'one_limb'}
    assert table['one_limb']['occluded_mpjpe_mm'] > 0
  assert (smoke_report / 'inference.npz').exists()
  assert (smoke_report / 'inference.png').exists()


def test_mpjpe_table_is_the_console_summary():
  results = {'lifter_sparse': {'none': {'mpjpe_mm': 52.13}, 'one_limb': {'mpjpe_mm': None}},
             'lifter_hierarchical': {'none': {'mpjpe_mm': 48.0},
                                     'one_limb': {'mpjpe_mm': 101.26}}}
  assert demo.mpjpe_table(results, ['none', 'one_limb']).splitlines() == [
      'MPJPE (mm) by occlusion level, test subjects:',
      'lifter                        none  one_limb',
      'sparse-only (baseline)        52.1         -',
      'HiPART (generated hierarchy)  48.0     101.3']
