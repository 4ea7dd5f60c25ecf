"""`vlv-ray sweep` on real jobs (`kind: jobs` sweep files): the paper's data-volume
experiment (Table 5) on a prepared dataset. plan.py: the points, validated and priced by
the cost model before anything starts; run.py: training and `vlv-ray eval` per point;
report.py: sweep.csv, sweep.md, sweep.png. The miniature world's sweep is toyworld/sweep.py."""
