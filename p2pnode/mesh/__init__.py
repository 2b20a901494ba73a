"""The mesh view: the link lists nodes share on the reserved topic ``$mesh``
(``linklist``), what a node knows of them (``view``), and drawings (``draw``)."""
