"""PIDs of Ray actors in the cluster the test session is connected to, for tests that kill them."""


def alive_actor_pids(class_name_prefix: str) -> list[int]:
    """Return the PIDs of the live actors whose class name starts with `class_name_prefix`."""
    # NOTE: ray._private.state is private (ray 2.60); it is the one place that lists actor PIDs
    # without the dashboard, which the test cluster runs without.
    from ray._private import state

    return [
        actor["Pid"]
        for actor in state.actors().values()
        if actor["ActorClassName"].startswith(class_name_prefix) and actor["State"] == "ALIVE" and actor["Pid"]
    ]
