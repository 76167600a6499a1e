rule fetch:
    output:
        directory(f"{RESOURCES}/{{uc}}/raw"),
    params:
        source=uc_section("source"),
        cache=f"{RESOURCES}/{{uc}}/download",
    log:
        f"{RESULTS}/{{uc}}/logs/fetch.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/fetch.py"
