"""The offline agent's rules: what it says and which robot RPC it calls for what it heard."""

import json
import time

import pytest

from lkdevice.host_tools.agent.brain import PHRASES, Brain, number_words, time_words


def at(hour: int, minute: int) -> time.struct_time:
    return time.struct_time((2026, 12, 2, hour, minute, 0, 2, 336, 0))


@pytest.mark.parametrize("heard,method,payload", [
    ("move forward", "move", {"direction": "forward", "duration_ms": 500}),
    ("go back", "move", {"direction": "backward", "duration_ms": 500}),
    ("turn left", "move", {"direction": "left", "duration_ms": 500}),
    ("Turn RIGHT.", "move", {"direction": "right", "duration_ms": 500}),
    ("stop", "stop", {}),
    ("set the light to red", "set_led", {"color": "red"}),
    ("turn off the light", "set_led", {"color": "off"}),
    ("what is your battery", "get_battery", {}),
])
def test_robot_phrases_become_rpc_calls(heard, method, payload):
    reply = Brain().answer(heard)
    assert reply.call is not None and reply.call.method == method
    assert json.loads(reply.call.payload) == payload


def test_the_time_is_said_in_words():
    brain = Brain(clock=lambda: at(19, 42))
    assert brain.answer("what time is it").say == "The time is seven forty two."
    assert time_words(at(0, 5)) == "The time is twelve oh five."
    assert time_words(at(13, 0)) == "The time is one o'clock."


def test_what_it_did_not_understand_is_repeated_back():
    assert Brain().answer("the weather in paris").say == "I heard: the weather in paris."
    assert Brain().answer("").say == "" and Brain().answer("").call is None


def test_what_can_you_do_names_the_commands():
    say = Brain().answer("what can you do").say
    assert "move forward" in say and "battery" in say


def test_results_and_errors_become_sentences():
    brain = Brain()
    move = brain.answer("move forward").call
    battery = brain.answer("what is your battery").call
    assert brain.after_call(move, '{"moving":true}', None) == "Moving forward."
    assert brain.after_call(battery, '{"percent":87.4,"voltage":8.1}', None) == "My battery is at eighty seven percent."
    # a device without the method (an ESP32 has no motors)
    assert "no robot" in brain.after_call(move, None, (1400, "Method not supported at destination"))
    assert brain.after_call(move, None, (1502, "Response timeout")) == "The robot did not answer."
    assert brain.after_call(move, None, (1500, "move: direction must be one of ...")).startswith("The robot said:")


def test_every_grammar_phrase_gets_an_answer_not_an_echo():
    brain = Brain()
    for phrase in PHRASES:
        reply = brain.answer(phrase)
        assert reply.call is not None or (reply.say and not reply.say.startswith("I heard")), phrase


def test_numbers_in_words():
    assert [number_words(n) for n in (0, 7, 13, 20, 42, 99, 100)] == [
        "zero", "seven", "thirteen", "twenty", "forty two", "ninety nine", "one hundred"]


def test_the_command_line_and_the_worker_agree_on_the_default_agent_name():
    from lkdevice.cli.agent import DEFAULT_AGENT_NAME as cli_default
    from lkdevice.host_tools.agent.worker import DEFAULT_AGENT_NAME
    assert cli_default == DEFAULT_AGENT_NAME


def test_the_command_line_and_the_stack_agree_on_their_defaults():
    from lkdevice.cli import up
    from lkdevice.host_tools import stack
    assert (up.DEFAULT_ROOM, up.DEFAULT_SERVER_PORT, up.DEFAULT_GATEWAY) == (
        stack.DEFAULT_ROOM, stack.DEFAULT_SERVER_PORT, stack.DEFAULT_GATEWAY)
