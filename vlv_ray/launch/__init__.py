"""`vlv-ray launch`: a cluster started, a job run on it, the cluster torn down (run.py).

clusterfile.py  render + validate a cluster-launcher YAML; its worker pools; credentials
state.py        ~/.vlv-ray/launches/<name>.json: what a re-run re-attaches to
backend.py      where the cluster runs: `ray up`/`ray down` (cloud) or the fake provider (local)
watch.py        the cluster's nodes, priced from `up` to teardown; capacity fallback
follow.py       submit, then the job's log lines under one live status line
(the command: vlv_ray/cli/launch.py)
"""
