"""hipart-jax: HiPART (CVPR 2025) in JAX/Flax."""

import setuptools

setuptools.setup(
    name='hipart-jax',
    version='0.1.0',
    description='HiPART: hierarchical pose autoregressive transformer for occlusion-robust '
                '3D human pose estimation, in JAX/Flax.',
    packages=setuptools.find_packages(include=['hipart_jax', 'hipart_jax.*', 'launch',
                                               'launch.*', 'tfds_builders',
                                               'tfds_builders.*', 'bench']),
    include_package_data=True,
    package_data={'tfds_builders': ['*/dummy_data/**/*', '*/README.md', '*/*.txt']},
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.8',
        'flax>=0.12',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11',
        'chex>=0.1.89',
        'numpy>=1.26',
        'absl-py>=2.1',
        'ml_collections>=1.0',
        # Datasets: tfds builders write array_record files that training reads through
        # tfds.data_source (random access, no TensorFlow in the training loop); tfds
        # itself still imports TensorFlow to build and to run its builder tests.
        'tensorflow-cpu>=2.16',
        'tensorflow-datasets>=4.9.6',
        'array_record>=0.5',
        # Undeclared by tensorflow-datasets on Python 3.11.
        'importlib_resources',
        # TensorBoard summaries of training runs (flax.metrics.tensorboard needs it).
        'tensorboard>=2.16',
        # MPI-INF-3DHP annotations are MATLAB v7.3 (HDF5) files.
        'h5py>=3.10',
        # Progress bars of training, generation, evaluation and inference (on terminals).
        'tqdm>=4.66',
    ],
    extras_require={
        # dill: imported by tfds.testing.DatasetBuilderTestCase.
        # hypothesis: property-based fuzzing of the file readers (tests/test_fuzz_readers.py).
        'test': ['pytest>=8', 'pytest-xdist>=3.5', 'dill', 'hypothesis>=6.100'],
        # The `tfds build` command line imports apache_beam and mlcroissant at start-up
        # (tfds 4.9.10).
        'build': ['apache-beam', 'mlcroissant', 'dill'],
        'viz': ['matplotlib>=3.8'],
        # Reading the official Human3.6M release (D3_Positions .cdf files), pure Python.
        'official': ['cdflib>=1.3'],
        # bench/grain_pipeline.py: Google's grain loader timed beside the project's own
        # input pipeline (hipart_jax/input_pipeline.py), which training keeps using.
        'bench': ['grain>=0.2.18'],
    },
)
