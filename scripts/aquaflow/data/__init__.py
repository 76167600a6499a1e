"""Reading data: decoding with rejection reasons, input listings, FlowCam runs, datasets, fetch."""
