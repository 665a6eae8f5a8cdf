/* list.h - the one intrusive doubly-linked list the daemon uses: circular,
 * with the head as a sentinel, so insertion and removal have no special
 * cases. Embed a struct list in the element and recover the element with
 * list_entry(). */
#ifndef BATCHTOK_DAEMON_LIST_H
#define BATCHTOK_DAEMON_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
	struct list *prev, *next;
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define list_entry(node, type, member)	container_of(node, type, member)
/* The first element, or NULL if the list is empty. */
#define list_first(head, type, member)                                                             \
	(list_empty(head) ? NULL : list_entry((head)->next, type, member))
/* Iterates safely against removal of the current element. */
#define list_for_each_safe(pos, tmp, head)                                                         \
	for (pos = (head)->next, tmp = pos->next; pos != (head); pos = tmp, tmp = pos->next)

static inline void list_init(struct list *head)
{
	head->prev = head->next = head;
}

static inline bool list_empty(const struct list *head)
{
	return head->next == head;
}

static inline void list_add_tail(struct list *head, struct list *node)
{
	node->prev = head->prev;
	node->next = head;
	head->prev->next = node;
	head->prev = node;
}

/* Unlinks node and leaves it self-linked, so a second list_del() is
 * harmless. */
static inline void list_del(struct list *node)
{
	node->prev->next = node->next;
	node->next->prev = node->prev;
	list_init(node);
}

#endif
