#include "chat/text.h"

#include <stdbool.h>
#include <string.h>

struct text_pair {
	const char *en;
	const char *ru;
};

static const struct text_pair texts[TEXT_COUNT] = {
	[TEXT_START] = {
		"Hi! I am a bot that answers with a language model. Just write to me; I remember our "
		"conversation. /new starts a fresh one, /help tells more.",
		"Привет! Я бот, который отвечает с помощью языковой модели. Просто напишите мне — я "
		"помню наш разговор. /new начинает новый, /help расскажет больше.",
	},
	[TEXT_HELP] = {
		"Write a message and I will answer, keeping the context of our conversation. I also understand "
		"voice messages, photos and text files.\n"
		"In groups, mention me or reply to my message.\n\n"
		"/new — forget this conversation and start a fresh one\n"
		"/model — see or change the model that answers in this chat\n"
		"/system — see or set how the model should behave here (/system reset: the default)\n"
		"/retry — ask again for the last answer\n"
		"/usage — the tokens you spent today and this month\n"
		"/image — draw a picture of what you describe\n"
		"/help — this help",
		"Напишите сообщение, и я отвечу, помня контекст разговора. Я понимаю и голосовые сообщения, "
		"фотографии и текстовые файлы.\n"
		"В группах упомяните меня или ответьте на моё сообщение.\n\n"
		"/new — забыть этот разговор и начать новый\n"
		"/model — посмотреть или сменить модель, которая отвечает в этом чате\n"
		"/system — посмотреть или задать, как модели себя вести (/system reset — по умолчанию)\n"
		"/retry — получить последний ответ заново\n"
		"/usage — сколько токенов вы потратили сегодня и за месяц\n"
		"/image — нарисовать картинку по описанию\n"
		"/help — эта справка",
	},
	[TEXT_NEW_DONE] = {
		"Started a new conversation: I have forgotten the previous one.",
		"Начинаем новый разговор: предыдущий я забыл.",
	},
	[TEXT_REFUSED] = {
		"Sorry, this bot is private. Your Telegram id is %lld: send it to the bot's owner "
		"to get access.",
		"Извините, это частный бот. Ваш id в Telegram: %lld — отправьте его владельцу бота, "
		"чтобы получить доступ.",
	},
	[TEXT_CONTEXT_DROPPED] = {
		"(Older messages of this conversation no longer fit the model's memory and were left "
		"out. /new starts afresh.)",
		"(Старые сообщения этого разговора больше не помещаются в память модели и были "
		"пропущены. /new начинает заново.)",
	},
	[TEXT_TOO_LONG] = {
		"This message is too long for the model. Please shorten it.",
		"Это сообщение слишком длинное для модели. Пожалуйста, сократите его.",
	},
	[TEXT_MODEL_BUSY] = {
		"The model is overloaded right now. Please try again in a minute.",
		"Модель сейчас перегружена. Попробуйте ещё раз через минуту.",
	},
	[TEXT_MODEL_DOWN] = {
		"The model is not answering right now. Please try again in a minute.",
		"Модель сейчас не отвечает. Попробуйте ещё раз через минуту.",
	},
	[TEXT_MODEL_QUOTA] = {
		"The bot's model account has run out of credit. The owner has been told in the log.",
		"На счёте модели у бота закончились средства. Владелец увидит это в журнале.",
	},
	[TEXT_MODEL_AUTH] = {
		"The bot cannot reach its model: its API key is not accepted. The owner has been told "
		"in the log.",
		"Бот не может обратиться к модели: его ключ API не принят. Владелец увидит это в "
		"журнале.",
	},
	[TEXT_MODEL_REJECTED] = {
		"The model refused this request. Please rephrase it or try /new.",
		"Модель отклонила запрос. Попробуйте переформулировать или начните заново: /new.",
	},
	[TEXT_MODEL_EMPTY] = {
		"The model returned an empty answer. Please try again.",
		"Модель вернула пустой ответ. Попробуйте ещё раз.",
	},
	[TEXT_MODEL_THINKING] = {
		"The model ran out of room while thinking and gave no answer. Please try again, or ask a "
		"narrower question.",
		"Модель исчерпала лимит, пока рассуждала, и не дала ответа. Попробуйте ещё раз или "
		"задайте вопрос поуже.",
	},
	[TEXT_ANSWER_CUT] = {
		"(the answer was cut off)",
		"(ответ оборвался)",
	},
	[TEXT_DEADLINE_CUT] = {
		"(time ran out: this is the answer so far)",
		"(время вышло: это ответ на данный момент)",
	},
	[TEXT_DEADLINE] = {
		"The model took too long to answer. Please try again, perhaps with a shorter question.",
		"Модель отвечала слишком долго. Попробуйте ещё раз, возможно, с более коротким вопросом.",
	},
	[TEXT_CHAT_BUSY] = {
		"I am still answering your earlier messages, so I skipped the ones that came meanwhile. "
		"Please send them again once I have answered.",
		"Я ещё отвечаю на предыдущие сообщения, поэтому пропустил пришедшие тем временем. "
		"Пожалуйста, отправьте их снова, когда я отвечу.",
	},
	[TEXT_STORE_FAILED] = {
		"Something went wrong with the conversation storage. Please try again later.",
		"Не удалось прочитать или сохранить историю разговора. Попробуйте позже.",
	},
	[TEXT_STORE_UNSAVED] = {
		"I could not save this exchange: the conversation storage is failing right now. I keep "
		"trying; until it is saved, I may not remember it.",
		"Не удалось сохранить этот обмен сообщениями: хранилище разговора сейчас не работает. Я "
		"продолжаю попытки; пока они не удались, я могу его не помнить.",
	},
	[TEXT_STORE_SAVING] = {
		"Your answer is ready, but the conversation storage is failing right now. I will send it as "
		"soon as it is saved.",
		"Ответ готов, но хранилище разговора сейчас не работает. Я пришлю его, как только сохраню.",
	},
	[TEXT_HISTORY_ASIDE] = {
		"I could not read our saved conversation, so I kept it aside for the bot's owner and "
		"started a new one.",
		"Не удалось прочитать сохранённый разговор: я отложил его для владельца бота и начал "
		"новый.",
	},
	[TEXT_MODEL_SHOW] = {
		"This chat talks to %s. Choose another:",
		"В этом чате отвечает модель %s. Выберите другую:",
	},
	[TEXT_MODEL_SET] = {
		"This chat now talks to %s.",
		"Теперь в этом чате отвечает модель %s.",
	},
	[TEXT_MODEL_UNKNOWN] = {
		"There is no model %s to choose here. /model shows those there are.",
		"Модели %s здесь нет. /model покажет доступные.",
	},
	[TEXT_MODEL_GONE] = {
		"The model %s is not available, so this chat is back to %s. Please send your message again.",
		"Модель %s недоступна, поэтому в этом чате снова отвечает %s. Пожалуйста, отправьте сообщение "
		"ещё раз.",
	},
	[TEXT_MODEL_PICKED] = {
		"Model: %s",
		"Модель: %s",
	},
	[TEXT_SYSTEM_SHOW] = {
		"The system prompt of this chat:\n\n%s\n\n/system TEXT replaces it, /system reset goes back "
		"to the default.",
		"Системный промпт этого чата:\n\n%s\n\n/system ТЕКСТ заменяет его, /system reset "
		"возвращает промпт по умолчанию.",
	},
	[TEXT_SYSTEM_NONE] = {
		"This chat has no system prompt. /system TEXT sets one, e.g. /system Answer briefly, like a "
		"pirate.",
		"У этого чата нет системного промпта. /system ТЕКСТ задаёт его, например: /system Отвечай "
		"кратко, как пират.",
	},
	[TEXT_SYSTEM_SET] = {
		"Saved: the model follows this system prompt from your next message.",
		"Сохранено: модель следует этому системному промпту со следующего сообщения.",
	},
	[TEXT_SYSTEM_RESET] = {
		"This chat is back to the default system prompt.",
		"В этом чате снова системный промпт по умолчанию.",
	},
	[TEXT_SYSTEM_TOO_LONG] = {
		"That is too long for a system prompt: at most %s characters, please.",
		"Слишком длинный системный промпт: не больше %s символов.",
	},
	[TEXT_NOT_PERMITTED] = {
		"In this group only the people the bot's owner named can change that.",
		"В этой группе это могут менять только те, кого указал владелец бота.",
	},
	[TEXT_STOP_BUTTON] = {
		"Stop",
		"Стоп",
	},
	[TEXT_STOPPED] = {
		"(stopped)",
		"(остановлено)",
	},
	[TEXT_STOPPED_EMPTY] = {
		"Stopped before the model said anything.",
		"Остановлено до того, как модель что-либо ответила.",
	},
	[TEXT_STOP_NOTHING] = {
		"This answer is finished already.",
		"Этот ответ уже закончен.",
	},
	[TEXT_STOP_NOT_YOURS] = {
		"Only the person who asked can stop this answer.",
		"Остановить этот ответ может только тот, кто спросил.",
	},
	[TEXT_RETRY_NOTHING] = {
		"There is no answer to ask again for: this conversation has none yet.",
		"Повторять нечего: в этом разговоре ещё нет ответа.",
	},
	[TEXT_OVER_DAILY] = {
		"You have used your %s tokens for today. The budget starts again at %s UTC.",
		"Вы израсходовали свои %s токенов на сегодня. Бюджет обновится в %s UTC.",
	},
	[TEXT_OVER_MONTHLY] = {
		"You have used your %s tokens for this month. The budget starts again on %s.",
		"Вы израсходовали свои %s токенов на этот месяц. Бюджет обновится %s.",
	},
	[TEXT_BUDGET_CUT] = {
		"(cut short: your token budget ran out; /usage tells more)",
		"(ответ прерван: закончился ваш бюджет токенов; подробнее — /usage)",
	},
	[TEXT_USAGE_TODAY] = {
		"Today (UTC)",
		"Сегодня (UTC)",
	},
	[TEXT_USAGE_MONTH] = {
		"This month",
		"В этом месяце",
	},
	[TEXT_USAGE_NONE] = {
		"no tokens",
		"токенов не потрачено",
	},
	[TEXT_USAGE_LEFT_DAY] = {
		"Left today: %s of %s tokens.",
		"Осталось на сегодня: %s из %s токенов.",
	},
	[TEXT_USAGE_LEFT_MONTH] = {
		"Left this month: %s of %s tokens.",
		"Осталось на месяц: %s из %s токенов.",
	},
	[TEXT_USAGE_ESTIMATED] = {
		"~ an estimate: the provider did not report every answer's tokens.",
		"~ оценка: провайдер сообщил не обо всех токенах.",
	},
	[TEXT_USAGE_ALL_DAY] = {
		"Top users today (UTC)",
		"Больше всех сегодня (UTC)",
	},
	[TEXT_USAGE_ALL_MONTH] = {
		"Top users this month",
		"Больше всех в этом месяце",
	},
	[TEXT_USAGE_ALL_ONLY_ADMINS] = {
		"Only the bot's admins can see everyone's usage. Here is yours.",
		"Расход всех видят только администраторы бота. Вот ваш.",
	},
	[TEXT_FILE_TOO_BIG] = {
		"This file is over 20 MB, the most a bot may download from Telegram. Please send a smaller one.",
		"Этот файл больше 20 МБ — больше бот не может скачать из Telegram. Пришлите файл поменьше.",
	},
	[TEXT_FILE_FAILED] = {
		"I could not download this file from Telegram. Please send it again.",
		"Не удалось скачать этот файл из Telegram. Пришлите его ещё раз.",
	},
	[TEXT_PICTURE_TOO_BIG] = {
		"This picture or PDF is over 5 MB, more than I keep in a conversation. Please send a smaller one.",
		"Эта картинка или PDF больше 5 МБ — столько я не храню в разговоре. Пришлите файл поменьше.",
	},
	[TEXT_FILE_UNSUPPORTED] = {
		"I cannot read this kind of file. I understand voice messages, photos and text files.",
		"Такой файл я прочитать не могу. Я понимаю голосовые сообщения, фотографии и текстовые файлы.",
	},
	[TEXT_FILE_TOO_LONG] = {
		"This file is too long for the model: at most about %s KB of text fit. Please send a shorter one.",
		"Этот файл слишком длинный для модели: помещается не больше примерно %s КБ текста. Пришлите файл "
		"покороче.",
	},
	[TEXT_PHOTO_QUESTION] = {
		"What is in this picture?",
		"Что на этой картинке?",
	},
	[TEXT_PDF_QUESTION] = {
		"What is in this document?",
		"О чём этот документ?",
	},
	[TEXT_NO_VISION] = {
		"This model cannot look at pictures or read files. /model lets you pick another one.",
		"Эта модель не умеет смотреть картинки и читать файлы. Другую можно выбрать командой /model.",
	},
	[TEXT_VOICE_HEARD] = {
		"🎙 Heard: “%s”",
		"🎙 Распознано: «%s»",
	},
	[TEXT_VOICE_EMPTY] = {
		"I could not make out any words in this recording.",
		"Не удалось разобрать слов в этой записи.",
	},
	[TEXT_VOICE_FAILED] = {
		"I could not turn this recording into text right now. Please try again, or type your message.",
		"Не удалось сейчас превратить эту запись в текст. Попробуйте ещё раз или напишите сообщение.",
	},
	[TEXT_IMAGE_USAGE] = {
		"/image draws a picture of what you describe, e.g. /image a red fox in the snow, watercolour.",
		"/image рисует картинку по описанию, например: /image рыжая лиса на снегу, акварель.",
	},
	[TEXT_IMAGE_REFUSED] = {
		"The picture model refused this description. Please try describing it differently.",
		"Модель картинок отказалась рисовать по этому описанию. Попробуйте описать иначе.",
	},
	[TEXT_IMAGE_FAILED] = {
		"I could not draw this picture right now. Please try again in a minute.",
		"Сейчас не получилось нарисовать картинку. Попробуйте ещё раз через минуту.",
	},
	[TEXT_BUTTON_STALE] = {
		"This button no longer works. /model shows the choice again.",
		"Эта кнопка больше не работает. /model покажет выбор снова.",
	},
};

/* The menu: what a person can type, in the order they need it. Commands exist before they are listed here. */
static const struct tg_command commands_en[] = {
    {"new", "Forget this conversation and start afresh"},
    {"model", "See or change the model that answers here"},
    {"system", "See or set how the model should behave here"},
    {"retry", "Ask again for the last answer"},
    {"usage", "Tokens you spent today and this month"},
    {"image", "Draw a picture of what you describe"},
    {"help", "What the bot does and how to use it"},
};
static const struct tg_command commands_ru[] = {
    {"new", "Забыть этот разговор и начать новый"},
    {"model", "Посмотреть или сменить модель"},
    {"system", "Посмотреть или задать, как модели себя вести"},
    {"retry", "Получить последний ответ заново"},
    {"usage", "Сколько токенов потрачено сегодня и за месяц"},
    {"image", "Нарисовать картинку по описанию"},
    {"help", "Что умеет бот и как им пользоваться"},
};

const struct tg_command *text_commands(bool is_russian, size_t *n)
{
	*n = sizeof commands_en / sizeof commands_en[0];
	return is_russian ? commands_ru : commands_en;
}

static bool prefers_russian(const char *code)
{
	if (!code)
		return false;
	static const char *const langs[] = {"ru", "be", "uk", "kk"};
	for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++)
		if (strncmp(code, langs[i], 2) == 0 && (code[2] == '\0' || code[2] == '-'))
			return true;
	return false;
}

const char *text_get(enum text_id id, const char *language_code)
{
	if ((unsigned)id >= TEXT_COUNT)
		return "";
	return prefers_russian(language_code) ? texts[id].ru : texts[id].en;
}
