"""Sound backends: a timm CNN on log-mel spectrograms (`sound_cnn`) and a CLAP audio tower with a
trainable head (`clap`); both predict vessel classes and an ordinal distance bin (CORAL)."""
