"""Simulated PLCs for the demo and the tests: machines that count, over real protocols.

``machine`` is the protocol-free machine model and its ground truth, ``commands`` the
text control commands, ``plant`` the clock, tick loop and command handling both protocol
simulators share, ``demo`` the demo plant's machines. ``opcua_plc`` serves them over OPC
UA (``control`` is the client for its ``Sim.Command`` method); ``modbus_plc`` over Modbus
TCP, on ``modbus_server`` (register tables with faults), with ``json_control`` as its
command channel. Nothing here is imported by the gateway's production paths, except
``gateway demo``.
"""
