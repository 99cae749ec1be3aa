"""The web console: what the node is receiving, building, waiting for and has imported, and the
buttons the people at the station need (retry, cancel, reburn), for the users of :mod:`node.users`.

It presents; it does not decide: every action is :mod:`node.actions`' (the CLI calls the same), every
report :mod:`node.report`'s. ``serve`` runs it in a process of its own (:mod:`node.console.process`)
so that nothing here slows the Storage SCP. The modules load when first used.
"""
