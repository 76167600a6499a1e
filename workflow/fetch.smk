rule fetch:
    output:
        directory(f"{RESOURCES}/{{uc}}/raw"),
    log:
        f"{RESULTS}/{{uc}}/logs/fetch.log",
    conda:
        "../envs/data.yaml"
    params:
        source=uc_section("source"),
        cache=f"{RESOURCES}/{{uc}}/download",
    script:
        "../scripts/fetch.py"
