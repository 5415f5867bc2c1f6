"""The LRP engine: rules (:mod:`.rules`), a rule applied to a layer's linear map (:mod:`.linear`),
how each layer family takes part (:mod:`.handlers`), the graph walk over a Keras model
(:mod:`.graph`), which rule each layer gets (:mod:`.composites`), and the compiled explainer
(:mod:`.explainer`). Imports go downwards in that order."""
