"""Test suites shared by the framework backends, run once per framework.

Each backend folder runs a suite through a thin test module that subclasses it::

    from framework_suites.physics import PhysicsSuite

    class TestPhysics(PhysicsSuite):
        '''The shared physics suite on PyTorch.'''

The suite's tests take the ``fw`` fixture, the framework adapter that the folder's
``conftest.py`` provides (:mod:`framework_suites.torch_framework` in tests/backend_pytorch,
:mod:`framework_suites.tf_framework` in tests/backend_tensorflow) after its
``importorskip`` of the framework. So the tox env ``torch`` runs the suites on PyTorch,
``tf`` on TensorFlow, and a framework that is missing skips its folder as a whole. An
adapter speaks numpy on both sides and hides the framework's tensors and layouts
(:class:`framework_suites.framework.Framework`), so one test body checks both backends.

Nothing here is collected by itself: no module name starts with ``test_``.
"""
