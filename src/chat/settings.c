#include "chat/settings.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int copy_member(const json_t *obj, const char *key, char **out)
{
	const char *v = json_string_value(json_object_get(obj, key));
	*out = v && v[0] ? strdup(v) : NULL;
	return v && v[0] && !*out ? -1 : 0;
}

int chat_settings_parse(const char *value, struct chat_settings *s)
{
	*s = (struct chat_settings){0};
	if (!value)
		return 0;
	json_t *root = json_loads(value, 0, NULL);
	int rc = copy_member(root, "model", &s->model) || copy_member(root, "system", &s->system) ? -1 : 0;
	json_decref(root);
	if (rc != 0)
		chat_settings_free(s);
	return rc;
}

char *chat_settings_format(const struct chat_settings *s)
{
	json_t *root = json_object();
	if (!root || (s->model && json_object_set_new(root, "model", json_string(s->model)) != 0) ||
	    (s->system && json_object_set_new(root, "system", json_string(s->system)) != 0)) {
		json_decref(root);
		return NULL;
	}
	char *text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return text;
}

int chat_settings_set(char **field, const char *v)
{
	char *copy = v ? strdup(v) : NULL;
	if (v && !copy)
		return -1;
	free(*field);
	*field = copy;
	return 0;
}

char *chat_settings_merge(const char *value, const struct chat_settings *mine, bool is_system)
{
	struct chat_settings now;
	if (chat_settings_parse(value, &now) != 0)
		return NULL;
	char *out = chat_settings_set(is_system ? &now.system : &now.model, is_system ? mine->system : mine->model) == 0
	                ? chat_settings_format(&now)
	                : NULL;
	chat_settings_free(&now);
	return out;
}

void chat_settings_free(struct chat_settings *s)
{
	free(s->model);
	free(s->system);
	*s = (struct chat_settings){0};
}

char *chat_settings_clean_system(const char *text, size_t *len)
{
	text += strspn(text, " \t\n\r");
	char *out = malloc(strlen(text) + 1);
	if (!out)
		return NULL;
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		if ((*p >= 0x20 && *p != 0x7f) || *p == '\n' || *p == '\t')
			out[n++] = (char)*p;
	while (n && (out[n - 1] == ' ' || out[n - 1] == '\n' || out[n - 1] == '\t'))
		n--;
	out[n] = '\0';
	*len = n;
	return out;
}
