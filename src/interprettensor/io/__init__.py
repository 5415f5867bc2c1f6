"""Input and output: the embedded digits (:mod:`.digits`), MNIST-style downloads (:mod:`.downloads`),
reading images and arrays (:mod:`.inputs`), explained data sets in shards (:mod:`.shards`),
heatmaps and pictures (:mod:`.render`) and TensorBoard summaries (:mod:`.summaries`)."""
