/* Unit tests for src/chat/settings.c: a chat's choices as stored, and one choice put into what is stored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "chat/settings.h"

#include "expect.h"

static void test_a_choice_keeps_the_other_kind_stored_meanwhile(void **state)
{
	(void)state;
	/* This invocation chose a model; another set the system prompt since this one read the settings. */
	struct chat_settings mine = {.model = "o3-mini", .system = NULL};
	char *v = chat_settings_merge("{\"system\":\"Be brief\"}", &mine, false);
	expect_str("the model put in, the prompt kept", "{\"model\":\"o3-mini\",\"system\":\"Be brief\"}", v);
	free(v);
	struct chat_settings prompt = {.model = NULL, .system = "Speak like a pirate"};
	v = chat_settings_merge("{\"model\":\"gpt-4o\",\"system\":\"Be brief\"}", &prompt, true);
	expect_str("the prompt replaced, the model kept", "{\"model\":\"gpt-4o\",\"system\":\"Speak like a pirate\"}", v);
	free(v);
	struct chat_settings reset = {0};
	v = chat_settings_merge("{\"model\":\"gpt-4o\",\"system\":\"Be brief\"}", &reset, true);
	expect_str("/system reset removes the prompt only", "{\"model\":\"gpt-4o\"}", v);
	free(v);
	v = chat_settings_merge(NULL, &mine, false);
	expect_str("nothing stored yet", "{\"model\":\"o3-mini\"}", v);
	free(v);
	v = chat_settings_merge("not json", &mine, false);
	expect_str("what is not settings reads as nothing chosen", "{\"model\":\"o3-mini\"}", v);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_choice_keeps_the_other_kind_stored_meanwhile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
