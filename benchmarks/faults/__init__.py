"""`tailor check-faults`: load and faults against a running Tailor, loopback only, bounded in time.

``stack`` starts ``tailor up`` (with a Redis the suite owns, so it can kill it);
``load`` drives concurrent clients; ``processes`` measures each process's memory;
``scenarios`` are the loads and faults; ``fuzz`` runs schemathesis; ``suite`` runs
them in order and ``report`` prints the table.
"""
