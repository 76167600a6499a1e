"""Step: objects per scan and size spectra before / after separation (aquaflow.preprocess.separate)."""

from aquaflow import plots, runlog
from aquaflow.preprocess import separate

runlog.setup(snakemake.log[0])
plots.before_after_counts(*separate.before_after(snakemake.input.folder), snakemake.output[0], unit="mm, ESD")
