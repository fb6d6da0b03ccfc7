"""Runtime environments (Ray's `runtime_env=`): env_vars, working_dir, py_modules, pip.

spec.py checks, merges and names an env; packaging.py zips local code into
content-addressed packages; agent.py builds envs on a node; worker_setup.py applies
one in a worker's process. The owner's side is core/runtime_envs.py, the node's shell
node/runtime_envs.py.
"""
